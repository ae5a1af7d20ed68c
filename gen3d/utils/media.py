"""Images and videos written atomically (previews, turntables, edited videos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gen3d.utils.atomic import atomic_path


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """[..., H, W, 3] floats in [0,1] -> uint8 numpy."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().numpy()
    return (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_image(path: Path, image) -> Path:
    """image [H,W,3] in [0,1] (tensor or array) or uint8 -> PNG."""
    import imageio.v3 as iio

    arr = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, arr, extension=".png")
    return Path(path)


def write_video(path: Path, frames, fps: float = 30.0) -> Path:
    """frames [N,H,W,3] (floats in [0,1] or uint8) -> .mp4 (H.264) or .gif, by the path's suffix."""
    import imageio.v2 as imageio

    arr = frames if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 else to_uint8(frames)
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".gif":
            imageio.mimsave(tmp, list(arr), format="GIF", duration=1000.0 / fps, loop=0)
        else:
            # macro_block_size=1 keeps small frames (e.g. 64x64) at their size
            with imageio.get_writer(
                tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1, pixelformat="yuv420p"
            ) as writer:
                for frame in arr:
                    writer.append_data(frame)  # type: ignore[attr-defined]  # imageio FFMPEG writer
    return path


def image_grid(images: torch.Tensor, ncols: int) -> torch.Tensor:
    """[N,H,W,C] -> one [rows*H, ncols*W, C] image (missing cells white)."""
    n, h, w, c = images.shape
    rows = -(-n // ncols)
    pad = rows * ncols - n
    if pad:
        images = torch.cat([images, images.new_ones(pad, h, w, c)])
    from einops import rearrange

    return rearrange(images, "(r k) h w c -> (r h) (k w) c", k=ncols)
