"""Demo videos rendered by the project: a shape from the builtin prior's dataset moving across the
frame (the camera slides sideways), drawn with gen3d.prior.data's sphere tracer. Used by tests,
docs and the bench; `python -m video.demo out.mp4 --shape sphere --colour blue`."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from gen3d.prior.data import PriorDataConfig, render_scenes
from gen3d.prior.tokenizer import COLOURS, SHAPES
from gen3d.render.cameras import make_cameras
from gen3d.utils.media import write_video


def moving_shape(n_frames: int = 8, size: int = 64, shape: str = "sphere", colour: str = "blue",
                 travel: float = 0.9, elevation: float = 15.0) -> torch.Tensor:
    """frames [F,3,size,size] in [0,1]: the shape moves from left to right (by `travel` world units)."""
    n = n_frames
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    cams = make_cameras(full(elevation), full(0.0), full(2.4), full(50.0), size, size)
    offset = torch.linspace(travel, -travel, n) if n > 1 else torch.zeros(1)
    cams.c2w[:, :3, 3] += cams.c2w[:, :3, 0] * offset[:, None]  # slide along the camera's right axis
    cams.light_position = cams.c2w[:, :3, 3] + torch.tensor([1.0, 1.5, 0.5])
    scenes = dict(
        shape=torch.full((n,), SHAPES.index(shape)), colour=torch.full((n,), COLOURS.index(colour)),
        cameras=cams, rotation=torch.eye(3).expand(n, 3, 3).clone(), scale=full(0.8),
        albedo_jitter=torch.zeros(n, 3), ambient=full(0.35), background=torch.ones(n, 3) * 0.92,
    )
    return render_scenes(PriorDataConfig(image_size=size, supersample=2), scenes)


def write_demo(path: str | Path, n_frames: int = 8, size: int = 64, fps: float = 8.0, **kw) -> Path:
    """Render `moving_shape` and write it as .mp4 / .gif (or PNGs when path has no suffix)."""
    from gen3d.utils.media import save_image

    frames = moving_shape(n_frames, size, **kw).permute(0, 2, 3, 1)
    path = Path(path)
    if path.suffix:
        return write_video(path, frames, fps=fps)
    for i, f in enumerate(frames):
        save_image(path / f"{i:04d}.png", f)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--shape", default="sphere", choices=SHAPES)
    p.add_argument("--colour", default="blue", choices=COLOURS)
    a = p.parse_args()
    print(write_demo(a.out, a.frames, a.size, a.fps, shape=a.shape, colour=a.colour))
