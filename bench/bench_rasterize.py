"""Forward + backward seconds of MeshRenderer on CPU for a ~10k-face sphere.

    python bench/bench_rasterize.py [--iters 10] [--batch 1] [--threads 1] [--resolution 68]

The marching-cubes sphere (radius 0.5) of a `--resolution`^3 grid (68 -> ~10k faces) with the
default texture field (hash grid + MLP), rendered with the pure-PyTorch rasterizer from random
training cameras at 64 and 128 px per shading mode; prints the median time of the rasterizer
alone, and of the renderer's forward and backward.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.geometry.mesh import MeshGeometry, MeshGeometryConfig  # noqa: E402
from gen3d.render.background import BackgroundConfig, make_background  # noqa: E402
from gen3d.render.cameras import CameraConfig, CameraSampler  # noqa: E402
from gen3d.render.mesh_renderer import MeshRenderer, MeshRendererConfig, world_to_clip  # noqa: E402
from gen3d.render.rasterize import rasterize  # noqa: E402


def _median_time(fn, iters: int) -> float:
    times = []
    for _ in range(iters + 2):  # two warm-up calls
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resolution", type=int, default=68, help="marching-cubes grid of the sphere")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    geo = MeshGeometry.from_field(
        lambda x: 0.5 - x.norm(dim=-1), MeshGeometryConfig(), resolution=a.resolution, threshold=0.0
    )
    renderer = MeshRenderer(MeshRendererConfig(backend="torch"), geo, make_background(BackgroundConfig()))
    sampler = CameraSampler(CameraConfig())
    print(
        f"sphere: {geo.faces.shape[0]} faces, {geo.base_vertices.shape[0]} vertices; batch {a.batch}; "
        f"{a.threads} thread(s)"
    )
    for size in (64, 128):
        cams = sampler.sample(a.batch, generator=torch.Generator().manual_seed(1), height=size, width=size)
        clip = world_to_clip(geo.vertices().detach(), cams, 0.1, 100.0)
        t_rast = _median_time(
            lambda clip=clip, size=size: rasterize(clip, geo.faces, size, size, backend="torch"), a.iters
        )
        for mode in ("albedo", "lambertian", "normal"):
            fwd, bwd = [], []
            for _ in range(a.iters + 2):
                geo.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                out = renderer(cams, mode)
                loss = out["comp_rgb"].mean() + out["opacity"].mean()
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                fwd.append(t1 - t0)
                bwd.append(t2 - t1)
            f, b = statistics.median(fwd[2:]), statistics.median(bwd[2:])
            print(
                f"{size:4d}px {mode:11s} rasterize {t_rast * 1e3:7.1f} ms | forward {f * 1e3:7.1f} ms "
                f"| backward {b * 1e3:7.1f} ms | total {(f + b) * 1e3:7.1f} ms"
            )


if __name__ == "__main__":
    main()
