"""Fixed-point diagnostic: start a method from the TRUE shape and measure how far the guidance moves it.

    python bench/bench_fixed_point.py [--methods dreamfusion] [--prompts "a red cube" ...] [--out DIR]
                                      [--start SHAPE] [--fit-steps 1500] [key=value ...]

For every method and prompt the first stage's field is fitted to the builtin world's true shape
(`gen3d.quality.fit.fit_to_primitive`: upright, the prompt's colour; `--start sphere` starts every run from
the sphere instead), then the default command runs as usual (`launch.py --config METHOD.yaml --prompt PROMPT
--model builtin`, the overrides appended). Two runs per prompt:

- `start`: `trainer.max_steps=0`, the fitted field's own export: what the representation and the export
  can hold (about 0.03, two samplings of one primitive, when they hold the shape);
- `after`: the method's steps from there: what the guidance keeps of the truth.

Each is measured like `bench/bench_quality.py` (Chamfer to the prompted primitive and the nearest one,
genus, stray share). A from-scratch run that ends far above `after` fails on the optimisation path, not on
what the guidance's fixed points are; an `after` far above `start` means the guidance itself drifts
away from the true shape (docs/methods.md, "Fixed points"). Runs go to --out/<method>/<slug>-<start|after>.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gen3d.systems.runner as runner  # noqa: E402
from gen3d.quality import evaluate_asset  # noqa: E402
from gen3d.quality.fit import fit_to_primitive  # noqa: E402
from launch import main as launch  # noqa: E402

PROMPTS = ["a red cube", "a yellow cone", "a green torus"]


def fitted_start(shape: str, colour: str, steps: int):
    """A `_train_stage` that fits the first trained stage's particles to `shape` before training."""
    train, done = runner._train_stage, []

    def stage(name, scfg, system, state, *args):
        if not done and state is None:
            for scene in system.scenes.values():
                loss = fit_to_primitive(scene.geometry, shape, colour, steps=steps, seed=scfg.seed)
                print(f"  fitted {name}'s field to the true {shape}: loss {loss:.4f}", flush=True)
            done.append(name)
        return train(name, scfg, system, state, *args)

    return stage


def run(method, prompt, start_shape, tag, out, overrides, fit_steps) -> dict:
    colour, shape = prompt.split()[-2:]
    run_root = out / method / f"{'-'.join(prompt.split())}-{tag}"
    stage, runner._train_stage = runner._train_stage, fitted_start(start_shape or shape, colour, fit_steps)
    t0 = time.perf_counter()
    try:
        argv = ["--config", f"{method}.yaml", "--prompt", prompt, "--model", "builtin", f"output={run_root}"]
        code = launch([*argv, *overrides, *(["trainer.max_steps=0"] if tag == "start" else [])])
    finally:
        runner._train_stage = stage
    if code:
        raise SystemExit(f"error: {method} {prompt!r} ({tag}) failed with exit code {code}")
    run_dir = next(run_root.glob("*/*/export")).parent
    figures = evaluate_asset(run_dir / "export" / "model.glb", shape=shape, turntable=run_dir / "video/turntable.mp4")
    figures["seconds"] = time.perf_counter() - t0
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=["dreamfusion"])
    p.add_argument("--prompts", nargs="+", default=PROMPTS)
    p.add_argument("--start", default=None, help="start every run from this shape (default: the prompted one)")
    p.add_argument("--fit-steps", type=int, default=1500)
    p.add_argument("--out", type=Path, default=Path("bench-fixed-point"))
    args, overrides = p.parse_known_args(argv)
    print(f"overrides: {' '.join(overrides) or '(none)'}; start: {args.start or 'the prompted shape'}")
    print("method | prompt | run | chamfer | nearest (its chamfer) | genus | stray | seconds")
    for method in args.methods:
        for prompt in args.prompts:
            for tag in ("start", "after"):
                f = run(method, prompt, args.start, tag, args.out, overrides, args.fit_steps)
                near = f["nearest"]
                print(
                    f"{method} | {prompt} | {tag} | {f['chamfer']:.3f} | {near} ({f['chamfer_all'][near]:.3f}) | "
                    f"{f['genus']} | {f['stray_fraction']:.1%} | {f['seconds']:.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
