"""Hash-grid and renderer timings on CPU (fwd + bwd). Run: python bench/bench_hashgrid.py [--threads N]

Reports the best of a few repeats as wall time and as CPU time of this process (the latter is
the fairer figure on a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.geometry.hashgrid import HashGrid, HashGridConfig  # noqa: E402
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig  # noqa: E402
from gen3d.render.background import BackgroundConfig, make_background  # noqa: E402
from gen3d.render.cameras import CameraConfig, CameraSampler  # noqa: E402
from gen3d.render.volume import RendererConfig, VolumeRenderer  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def bench_grid(name: str, cfg: HashGridConfig, n: int, repeats: int) -> None:
    grid = HashGrid(cfg)
    x = torch.rand(n, 3)

    def step():
        grid.table.grad = None
        grid(x).square().sum().backward()

    wall, cpu = best_of(step, repeats)
    print(
        f"hashgrid {name:<34} N={n:<7} params={grid.table.numel():>9}  wall {wall * 1e3:7.1f} ms  cpu {cpu * 1e3:7.1f} ms"
    )


def bench_renderer(shading: str, repeats: int, **geo_kw) -> None:
    torch.manual_seed(0)
    geo = ImplicitVolume(ImplicitVolumeConfig(**geo_kw))
    renderer = VolumeRenderer(RendererConfig(), geo, make_background(BackgroundConfig())).train()
    renderer.update_step(0)
    cams = CameraSampler(CameraConfig(height=64, width=64)).sample(1, generator=torch.Generator().manual_seed(0))
    info = {}

    def step():
        out = renderer(cams, shading)
        loss = out["comp_rgb"].mean() + out.get("orient_loss", 0.0)
        loss.backward()
        info["n"] = out["n_samples"]

    wall, cpu = best_of(step, repeats)
    print(
        f"renderer 64x64 B=1 {shading:<12} {str(geo_kw) or '':<22} samples={info['n']:<6} "
        f"wall {wall * 1e3:7.1f} ms  cpu {cpu * 1e3:7.1f} ms"
    )
    wall, cpu = best_of(lambda: renderer.occupancy.refresh(geo.density), 1)
    print(
        f"occupancy refresh ({renderer.cfg.grid_resolution}^3 cells) wall {wall * 1e3:7.1f} ms  cpu {cpu * 1e3:7.1f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    bench_grid(
        "reference 16 lv x 2^19",
        HashGridConfig(n_levels=16, log2_hashmap_size=19, max_resolution=2048),
        262144,
        args.repeats,
    )
    quick = HashGridConfig()
    bench_grid(f"quickstart {quick.n_levels} lv x 2^{quick.log2_hashmap_size}", quick, 65536, args.repeats)
    bench_grid(f"quickstart {quick.n_levels} lv x 2^{quick.log2_hashmap_size}", quick, 11000, args.repeats)
    for shading in ("albedo", "lambertian"):
        bench_renderer(shading, args.repeats)


if __name__ == "__main__":
    main()
