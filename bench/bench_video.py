"""Wall time of a Tune-A-Video (or ControlVideo) edit on the CPU: fine-tuning + inversion + one edit.

    python bench/bench_video.py [--config tuneavideo.yaml] [--model builtin] [--threads 2]
        [--shape sphere] [--colour blue] [--to red] [key=value ...]

Renders the demo video (by default a blue sphere moving across the frame, 8 frames at 64x64), runs
the system exactly as launch.py does (configs/tuneavideo.yaml: 300 fine-tuning steps, 50 inversion
and 50 sampling steps) with the source caption "a {colour} {shape}" and the edit "a {to} {shape}",
and prints the time of each phase and the total against the 5-minute target, then the edit's
quality (metrics.json): the builtin classifier's colour / shape accuracy, the silhouette IoU with
the source frames and the fraction of frames classified as the same shape as the source. Without a
trained builtin prior it uses a random-weight pipeline of the same architecture (identical cost; the
edit itself is then meaningless) and says so.
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
from gen3d.prior.tokenizer import COLOURS, SHAPES  # noqa: E402
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
    p.add_argument("--shape", default="sphere", choices=SHAPES)
    p.add_argument("--colour", default="blue", choices=COLOURS)
    p.add_argument("--to", default="red", choices=COLOURS, help="the edited colour")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-video-"))
    model, note = a.model, ""
    if model == "builtin" and not (BUILTIN_PRIOR / "model_index.json").is_file():
        from gen3d.prior.model import build_random_pipeline

        model, note = str(build_random_pipeline(work / "random-prior")), " (random weights: builtin prior not trained yet)"
    clip = moving_shape(8, 64, shape=a.shape, colour=a.colour)
    video = write_video(work / f"{a.shape}.mp4", clip.permute(0, 2, 3, 1), fps=8)
    source, edit = f"a {a.colour} {a.shape}", f"a {a.to} {a.shape}"
    cfg = build_config(VideoEditConfig, read_yaml(resolve_config_path(a.config)),
                       {"model": model, "video": str(video), "prompt": source, "edit": [edit],
                        "frames": 8, "output": str(work)}, a.overrides)
    times: dict[str, float] = {}
    import video.run as run_mod

    for mod, name in [(run_mod, "fine_tune"), (run_mod, "ddim_invert"), (run_mod, "ddim_sample"),
                      (run_mod, "ddim_edit")]:
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
    sampling = times.get("ddim_sample", 0) + times.get("ddim_edit", 0)
    shared = f", source attention {cfg.sampling.source_attention:g}" if cfg.sampling.source_attention > 0 else ""
    print(f"  sampling ({cfg.sampling.steps} steps, CFG{shared}): {sampling:7.1f} s")
    print(f"  total (load, encode, tune, invert, edit, write, metrics): {total:7.1f} s "
          f"[target < 300 s: {'OK' if total < 300 else 'MISSED'}]")
    metrics = result["metrics"]
    src_cls = metrics["source"].get("classifier") or {}
    for label, m in [("source", metrics["source"]), ("edit", metrics["edits"][0])]:
        cls, agree = m.get("classifier") or {}, m.get("source_agreement") or {}
        line = f"  {label} '{m['prompt']}':"
        values = {k: cls.get(k) for k in ("colour_accuracy", "shape_accuracy")}
        values.update({k: agree.get(k) for k in ("silhouette_iou", "shape_agreement")})
        for key, value in values.items():
            if value is not None:
                line += f" {key}={value:.2f}"
        if cls.get("shapes"):
            line += f" shapes: {' '.join(cls['shapes'])}"
        print(line)
    if src_cls.get("shape_accuracy", 1) < 1:
        print("  (shape_accuracy counts frames classified as the named shape; the classifier misreads some source "
              "frames too, which shape_agreement discounts)")
    print(f"  outputs: {run_dir}")


if __name__ == "__main__":
    main()
