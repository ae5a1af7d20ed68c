"""Wall time of a Tune-A-Video (or ControlVideo) edit on the CPU: fine-tuning + inversion + one edit.

    python bench/bench_video.py [--config tuneavideo.yaml] [--model builtin] [--threads 2] [key=value ...]

Renders the demo video (a blue sphere moving across the frame, 8 frames at 64x64), runs the
system exactly as launch.py does (configs/tuneavideo.yaml: 300 fine-tuning steps, 50 inversion
and 50 sampling steps), and prints the time of each phase and the total against the 5-minute
target. Without a trained builtin prior it uses a random-weight pipeline of the same
architecture (identical cost; the edit itself is then meaningless) and says so.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.config import build_config, read_yaml, resolve_config_path  # noqa: E402
from gen3d.diffusion.prior import BUILTIN_PRIOR  # noqa: E402
from gen3d.utils.media import write_video  # noqa: E402
from video.config import VideoEditConfig  # noqa: E402
from video.demo import moving_shape  # noqa: E402
from video.run import run_video  # noqa: E402


def _timed(module, name: str, times: dict):
    fn = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="tuneavideo.yaml")
    p.add_argument("--model", default="builtin")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    model, note = a.model, ""
    if model == "builtin" and not (BUILTIN_PRIOR / "model_index.json").is_file():
        from gen3d.prior.model import build_random_pipeline

        model, note = str(build_random_pipeline(work / "random-prior")), " (random weights: builtin prior not trained yet)"
    video = write_video(work / "sphere.mp4", moving_shape(8, 64).permute(0, 2, 3, 1), fps=8)
    cfg = build_config(VideoEditConfig, read_yaml(resolve_config_path(a.config)),
                       {"model": model, "video": str(video), "prompt": "a blue sphere", "edit": ["a red sphere"],
                        "frames": 8, "output": str(work)}, a.overrides)
    times: dict[str, float] = {}
    import video.run as run_mod

    for mod, name in [(run_mod, "fine_tune"), (run_mod, "ddim_invert"), (run_mod, "ddim_sample")]:
        setattr(mod, name, _timed(mod, name, times))
    run_dir = work / "run"
    run_dir.mkdir()
    t0 = time.perf_counter()
    result = run_video(cfg, run_dir)
    total = time.perf_counter() - t0
    print(f"{cfg.system} on {model}{note}, {cfg.frames} frames at {result['metrics']['size']}px, "
          f"{torch.get_num_threads()} threads")
    print(f"  fine-tune ({cfg.trainer.max_steps} steps): {times.get('fine_tune', 0):7.1f} s "
          f"({times.get('fine_tune', 0) / max(cfg.trainer.max_steps, 1):.3f} s/step, "
          f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f})")
    print(f"  DDIM inversion ({cfg.sampling.inversion_steps} steps): {times.get('ddim_invert', 0):7.1f} s")
    print(f"  sampling ({cfg.sampling.steps} steps, CFG): {times.get('ddim_sample', 0):7.1f} s")
    print(f"  total (load, encode, tune, invert, edit, write, metrics): {total:7.1f} s "
          f"[target < 300 s: {'OK' if total < 300 else 'MISSED'}]")
    print(f"  outputs: {run_dir}")


if __name__ == "__main__":
    main()
