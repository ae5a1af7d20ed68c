#!/usr/bin/env python
"""gen3d command line: load a config, build the system it names, train / resume / export.

python launch.py --config dreamfusion.yaml --prompt "a red cube" --model builtin
python launch.py --config dreamfusion.yaml --prompt "a red cube" guidance.guidance_scale=50 trainer.max_steps=2000
python launch.py --resume outputs/dreamfusion/a-red-cube            # continue a run
python launch.py --resume outputs/dreamfusion/a-red-cube --export-only
python launch.py report outputs/                                    # gallery of every run (gen3d.report)

Installed (`pip install .`), the `gen3d` command is this file's main().
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from gen3d.errors import UserError
from gen3d.utils.console import setup_console

OVERRIDE = re.compile(r"[A-Za-z_][\w.\[\]-]*=")  # the start of a key=value override


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog=Path(sys.argv[0]).name if Path(sys.argv[0]).name == "gen3d" else "launch.py",
        description="Text-to-3D and video editing on pretrained 2D diffusion priors.",
        epilog="Free arguments of the form key=value override any config field, e.g. "
        "guidance.guidance_scale=50 trainer.max_steps=2000 camera.height=128. "
        "'report DIR' instead of options writes DIR's run report or the gallery of the runs below it.",
    )
    p.add_argument("--config", help="YAML config: a path, or a file name inside configs/ (e.g. dreamfusion.yaml)")
    p.add_argument("--prompt", help='text prompt, e.g. "a red cube"')
    p.add_argument(
        "--model",
        help="diffusion prior: 'builtin', a local diffusers folder, or a hub id (downloaded on first use)",
    )
    p.add_argument("--seed", type=int, help="random seed (each process uses seed + rank)")
    p.add_argument("--steps", type=int, help="training steps (trainer.max_steps)")
    p.add_argument(
        "--output", help="root folder for runs (default outputs/); runs go to <output>/<method>/<prompt-slug>[-N]"
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="PATH",
        help="continue a run: its directory or a checkpoint file; without PATH, the newest run of this config and prompt",
    )
    p.add_argument(
        "--export-only", action="store_true", help="skip training; render the turntable and export the mesh of --resume"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="where to run (default: cuda when available)")
    p.add_argument("--gpus", metavar="LIST|N", help="CUDA devices for DDP: '0,1,2,3' or a count ('4')")
    p.add_argument(
        "--devices", type=int, help="number of processes on --device (e.g. --device cpu --devices 2: DDP over gloo)"
    )
    p.add_argument("--stage", help="multi-stage methods: start at this stage (its predecessor from --from or this run)")
    p.add_argument(
        "--from", dest="from_run", metavar="RUN_DIR", help="take the previous stage's checkpoint from another run"
    )
    p.add_argument("--particles", type=int, help="VSD: number of 3D models optimised together (each exported)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("--quiet", action="store_true", help="print warnings and errors only (no progress bars)")
    talk.add_argument("--verbose", action="store_true", help="also print library messages and every step's losses")
    g = p.add_argument_group("video editing (tuneavideo.yaml, controlvideo.yaml)")
    g.add_argument("--video", help="input video: .mp4, .gif or a folder of frames")
    g.add_argument(
        "--edit", action="append", metavar="PROMPT", help="edited prompt; repeat for several edits of one fine-tuning"
    )
    g.add_argument(
        "--control",
        action="append",
        metavar="KIND[:WEIGHT]",
        help="ControlVideo condition, e.g. canny or canny:0.7; repeatable",
    )
    g.add_argument(
        "--controlnet",
        action="append",
        metavar="[KIND=]PATH",
        help="ControlVideo's ControlNet (a diffusers ControlNetModel folder or hub id) for each --control: "
        "repeat in --control order, or name the kind: canny=PATH, canny=PATH,depth=PATH",
    )
    g.add_argument("--frames", type=int, help="number of frames to use")
    g.add_argument("--stride", type=int, help="use every N-th frame")
    g.add_argument("--start", type=int, help="first frame to use")
    g.add_argument("--size", type=int, help="frame size (square) the model works at")
    g.add_argument("--mask", help="region the edits may change: a mask video or folder (white = edit)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = p.parse_intermixed_args(argv)  # key=value overrides may come before, between or after flags
    if args.resume and OVERRIDE.match(args.resume) and not Path(args.resume).exists():
        args.overrides.insert(0, args.resume)  # `--resume key=value`: a bare --resume, then an override
        args.resume = "latest"
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:  # `gen3d report outputs/`: the gallery / a run's report
        from gen3d.report.__main__ import main as report

        return report(argv[1:])
    args = parse_args(argv)
    setup_console("quiet" if args.quiet else "verbose" if args.verbose else "normal")
    try:
        from gen3d.cli import run_from_args

        run_from_args(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # gen3d.reliability.interrupt.Interrupted says how to resume
        print(str(err) or "interrupted; checkpoints written so far are kept (resume with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
