"""Seconds per DreamFusion iteration, split into render / guidance / backward / optimizer.

    python bench/bench_dreamfusion.py [--model builtin] [--iters 30] [key=value ...]

Uses the quickstart config (configs/dreamfusion.yaml) and the same modules as training.
Prints the split, the total, and the ratio (iteration time) / (guidance-only time).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.config import read_yaml, resolve_config_path  # noqa: E402
from gen3d.profiles import build_with_profile  # noqa: E402
from gen3d.systems.text3d import RandomCameraDataset, Text3DConfig, Text3DSystem, batch_to_cameras  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="builtin")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shading", default="albedo")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = build_with_profile(
        Text3DConfig,
        read_yaml(resolve_config_path("dreamfusion.yaml")),
        {"prompt": "a red cube", "model": a.model, "prompt_processor": {"cache_dir": None}},
        a.overrides,
    )
    system = Text3DSystem(cfg)
    system.setup_prior()
    opt = system.configure_optimizers()
    data = RandomCameraDataset(cfg.camera, a.iters + 5, cfg.seed)
    times = {"render": 0.0, "guidance": 0.0, "backward": 0.0, "optimizer": 0.0}
    for i in range(a.iters + 5):
        batch = torch.utils.data.default_collate([data[i]])
        cams = batch_to_cameras(batch, cfg.camera.height, cfg.camera.width)
        t0 = time.perf_counter()
        out = system.scene(0)(cams, shading=a.shading)
        t1 = time.perf_counter()
        cond, uncond = system._prompts(cams.elevation, cams.azimuth)
        g = system._guidance(out["comp_rgb"].permute(0, 3, 1, 2), cond, uncond, i)
        t2 = time.perf_counter()
        g["loss"].backward()
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        system.scene(0).update_step(i)
        t4 = time.perf_counter()
        if i >= 5:  # warm-up excluded
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[k] += dt
    per = {k: v / a.iters for k, v in times.items()}
    total = sum(per.values())
    # guidance alone: VAE encode + CFG UNet on a fixed image, no rendering, no backward through the field
    img = torch.rand(cfg.trainer.batch_size, 3, cfg.camera.height, cfg.camera.width, requires_grad=True)
    t0 = time.perf_counter()
    for i in range(a.iters):
        system._guidance(img, cond, uncond, i)["loss"].backward()
    guidance_only = (time.perf_counter() - t0) / a.iters
    print(f"model={a.model} resolution={cfg.camera.height} threads={a.threads} iters={a.iters}")
    for k, v in per.items():
        print(f"  {k:<10} {v * 1000:8.1f} ms  ({100 * v / total:4.1f}%)")
    print(
        f"  {'iteration':<10} {total * 1000:8.1f} ms  -> {1 / total:.1f} it/s, "
        f"{cfg.trainer.max_steps} steps in {cfg.trainer.max_steps * total:.0f} s"
    )
    print(
        f"  guidance-only {guidance_only * 1000:.1f} ms; ratio iteration / guidance-only = {total / guidance_only:.2f}"
    )


if __name__ == "__main__":
    main()
