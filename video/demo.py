"""Demo videos rendered by the project: a shape from the builtin prior's dataset moving in front of a
backdrop, drawn with gen3d.prior.data's sphere tracer, with the renderer's own object masks. Used by
tests, docs and the bench; `python -m video.demo out.mp4 --shape sphere --colour blue
[--background gradient] [--motion rise]`.

Motions: `slide` (left to right: the camera slides sideways), `rise` (bottom to top), `spin` (turns
about the vertical axis in place, drifting slightly right), `zoom` (comes closer). Backgrounds: `white`
(the prior's light grey 0.92, as in its training images), `grey` (mid grey), `dark` (a dark blue-grey
plate), `gradient` (a soft diagonal colour gradient), `texture` (smooth coloured waves and a faint
checker). The object is rendered over black and over white: the difference is its coverage (alpha),
so any backdrop image composites exactly, and `alpha > 0.5` is the ground-truth mask.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from gen3d.prior.data import PriorDataConfig, _rotation, render_scenes
from gen3d.prior.tokenizer import COLOURS, SHAPES
from gen3d.render.cameras import make_cameras
from gen3d.utils.media import write_video

MOTIONS = ("slide", "rise", "spin", "zoom")
BACKGROUNDS = ("white", "grey", "dark", "gradient", "texture")


def backdrop(kind: str, size: int, seed: int = 0) -> torch.Tensor:
    """A static background image [3,size,size] in [0,1]."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"unknown background {kind!r} (one of {', '.join(BACKGROUNDS)})")
    plain = {"white": (0.92,) * 3, "grey": (0.5,) * 3, "dark": (0.16, 0.18, 0.24)}
    if kind in plain:
        return torch.tensor(plain[kind])[:, None, None].expand(3, size, size).clone()
    v, u = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    if kind == "gradient":  # teal at the top left to warm sand at the bottom right
        t = ((u + v) / 2)[None]
        return (
            torch.tensor([0.25, 0.55, 0.6])[:, None, None] * (1 - t)
            + torch.tensor([0.85, 0.7, 0.45])[:, None, None] * t
        )
    g = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * torch.rand(3, 2, generator=g)
    waves = torch.stack(
        [
            0.5
            + 0.18
            * torch.sin(2 * math.pi * (1.5 + c) * u + phase[c, 0])
            * torch.cos(2 * math.pi * (1 + 0.5 * c) * v + phase[c, 1])
            for c in range(3)
        ]
    )
    checker = ((torch.floor(u * 8) + torch.floor(v * 8)) % 2)[None] * 0.06
    return (waves + checker).clamp(0, 1)


def _scenes(n: int, size: int, shape: str, colour: str, motion: str, travel: float, elevation: float) -> dict:
    full = lambda v: torch.full((n,), float(v))  # noqa: E731
    s = torch.linspace(-1, 1, n) if n > 1 else torch.zeros(1)
    distance = torch.linspace(3.1, 2.1, n) if motion == "zoom" else full(2.4)
    cams = make_cameras(full(elevation), full(0.0), distance, full(50.0), size, size)
    right, up = cams.c2w[:, :3, 0], cams.c2w[:, :3, 1]
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r} (one of {', '.join(MOTIONS)})")
    shift = {
        "slide": travel * s[:, None] * right,
        "rise": 0.7 * travel * s[:, None] * up,
        "spin": 0.2 * travel * s[:, None] * right,
        "zoom": torch.zeros(n, 3),
    }[motion]  # on screen
    cams.c2w[:, :3, 3] -= shift  # the camera moves the other way
    cams.light_position = cams.c2w[:, :3, 3] + torch.tensor([1.0, 1.5, 0.5])
    yaw = torch.linspace(0, 0.6 * math.pi, n) if motion == "spin" else torch.zeros(n)
    tilt = torch.full((n,), 0.25) if motion == "spin" else torch.zeros(n)
    return dict(
        shape=torch.full((n,), SHAPES.index(shape)),
        colour=torch.full((n,), COLOURS.index(colour)),
        cameras=cams,
        rotation=_rotation(yaw, tilt, torch.zeros(n)),
        scale=full(0.8),
        albedo_jitter=torch.zeros(n, 3),
        ambient=full(0.35),
        background=torch.zeros(n, 3),
    )


def moving_shape_and_mask(
    n_frames: int = 8,
    size: int = 64,
    shape: str = "sphere",
    colour: str = "blue",
    travel: float = 0.9,
    elevation: float = 15.0,
    motion: str = "slide",
    background: str = "white",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames [F,3,size,size] in [0,1], ground-truth object masks [F,size,size] bool)."""
    scenes = _scenes(n_frames, size, shape, colour, motion, travel, elevation)
    cfg = PriorDataConfig(image_size=size, supersample=2)
    over_black = render_scenes(cfg, scenes)
    over_white = render_scenes(cfg, {**scenes, "background": torch.ones(n_frames, 3)})
    alpha = (1 - (over_white - over_black).mean(dim=1, keepdim=True)).clamp(0, 1)  # [F,1,H,W]
    frames = over_black + (1 - alpha) * backdrop(background, size)[None]
    return frames.clamp(0, 1), alpha[:, 0] > 0.5


def moving_shape(
    n_frames: int = 8,
    size: int = 64,
    shape: str = "sphere",
    colour: str = "blue",
    travel: float = 0.9,
    elevation: float = 15.0,
    motion: str = "slide",
    background: str = "white",
) -> torch.Tensor:
    """frames [F,3,size,size] in [0,1] (see `moving_shape_and_mask`)."""
    return moving_shape_and_mask(n_frames, size, shape, colour, travel, elevation, motion, background)[0]


def write_demo(
    path: str | Path, n_frames: int = 8, size: int = 64, fps: float = 8.0, mask: str | Path | None = None, **kw
) -> Path:
    """Render `moving_shape_and_mask` and write it as .mp4 / .gif (or PNGs when path has no suffix);
    mask: also write the ground-truth masks there (same convention)."""
    from gen3d.utils.media import save_image

    frames, masks = moving_shape_and_mask(n_frames, size, **kw)
    outputs = [(Path(path), frames.permute(0, 2, 3, 1))]
    if mask:
        outputs.append((Path(mask), masks.float()[..., None].expand(-1, -1, -1, 3)))
    for out, data in outputs:
        if out.suffix:
            write_video(out, data, fps=fps)
            continue
        for i, f in enumerate(data):
            save_image(out / f"{i:04d}.png", f)
    return Path(path)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--shape", default="sphere", choices=SHAPES)
    p.add_argument("--colour", default="blue", choices=COLOURS)
    p.add_argument("--motion", default="slide", choices=MOTIONS)
    p.add_argument("--background", default="white", choices=BACKGROUNDS)
    p.add_argument("--mask", help="also write the ground-truth object masks (.mp4 / .gif / folder)")
    a = p.parse_args()
    print(
        write_demo(
            a.out,
            a.frames,
            a.size,
            a.fps,
            a.mask,
            shape=a.shape,
            colour=a.colour,
            motion=a.motion,
            background=a.background,
        )
    )
