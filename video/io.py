"""Read the input video: mp4 / gif / a folder of frames -> frames [F,3,S,S] in [0,1] and fps.

Frames start, start+stride, ... (`frames` of them) are taken, centre-cropped to a square and
resized to `size`. Every problem a user can cause is a one-line UserError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gen3d.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_FPS = 8.0


@dataclass
class Clip:
    """frames [F,3,S,S] float in [0,1]; fps of the source; indices of the frames used; the source's
    frame size (height, width) before cropping."""

    frames: torch.Tensor
    fps: float
    indices: list[int]
    source_size: tuple[int, int] = (0, 0)


def _wanted(total: int | None, frames: int, stride: int, start: int, path: Path) -> list[int]:
    if frames < 2:
        raise UserError(f"--frames must be at least 2 (got {frames})")
    if stride < 1 or start < 0:
        raise UserError(f"--stride must be >= 1 and --start >= 0 (got stride {stride}, start {start})")
    idx = [start + k * stride for k in range(frames)]
    if total is not None and idx[-1] >= total:
        if total < 2:
            raise UserError(f"video '{path}' has only {total} frame(s); a video needs at least 2")
        raise UserError(
            f"--frames {frames} with --start {start} --stride {stride} needs frame {idx[-1]}, "
            f"but video '{path}' has {total} frames"
        )
    return idx


def _check_sizes(arrays: list[np.ndarray], path: Path) -> None:
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise UserError(f"frames of '{path}' have different sizes: {sorted(shapes)}")


def _frames_at(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """uint8 [H,W,C] arrays (C = 1, 3 or 4) -> [F,3,size,size] floats in [0,1], centre-cropped and resized
    one frame at a time: only one full-size frame is ever held as floats (8 frames of 4000x4000 would
    take 1.5 GB at once)."""
    out = []
    for a in arrays:
        a = a if a.ndim == 3 else a[..., None]
        a = a[..., :3] if a.shape[-1] >= 3 else np.repeat(a[..., :1], 3, axis=-1)
        h, w = a.shape[:2]
        s = min(h, w)
        a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]  # crop the uint8 frame first
        frame = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255.0
        out.append(crop_resize(frame, size)[0].clamp(0, 1))
    return torch.stack(out)


def _read_folder(path: Path, frames: int, stride: int, start: int) -> tuple[list[np.ndarray], float, list[int]]:
    import imageio.v3 as iio

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    idx = _wanted(len(files), frames, stride, start, path)
    arrays = []
    for i in idx:
        try:
            arrays.append(np.asarray(iio.imread(files[i])))
        except Exception:
            raise UserError(f"cannot read image '{files[i]}' (corrupt or not an image)") from None
    return arrays, 0.0, idx


def _iter_file(path: Path, idx: list[int] | None, label: str = "video") -> tuple[list[np.ndarray], int, dict]:
    """The frames idx (all when None) of an mp4 / gif, the number of frames read, and its metadata."""
    import imageio.v3 as iio

    if path.stat().st_size == 0:
        raise UserError(f"{label} '{path}' is empty (0 bytes)")
    arrays, total, wanted = [], 0, None if idx is None else set(idx)
    try:
        meta = iio.immeta(path, exclude_applied=False) if path.suffix.lower() != ".gif" else iio.immeta(path, index=0)
        for i, frame in enumerate(iio.imiter(path)):
            total = i + 1
            if wanted is None or i in wanted:
                arrays.append(np.asarray(frame))
            if idx is not None and i >= idx[-1]:
                break
    except Exception as err:
        raise UserError(
            f"cannot read {label} '{path}' (corrupt or unsupported format): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None
    return arrays, total, meta


def _read_file(path: Path, frames: int, stride: int, start: int) -> tuple[list[np.ndarray], float, list[int]]:
    idx = _wanted(None, frames, stride, start, path)
    arrays, total, meta = _iter_file(path, idx)
    _wanted(total, frames, stride, start, path)  # too short: a clear message
    fps = float(meta.get("fps") or 0.0)
    if not fps and meta.get("duration"):
        fps = 1000.0 / float(meta["duration"])  # gif: milliseconds per frame
    return arrays, fps, idx


def read_all_frames(path: str | Path, label: str = "mask") -> list[np.ndarray]:
    """Every frame of an mp4 / gif / image folder as uint8 arrays (for masks); UserError when unreadable."""
    import imageio.v3 as iio

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{label} '{path}' does not exist")
    if not path.is_dir():
        return _iter_file(path, None, label)[0]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{label} folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        return [np.asarray(iio.imread(f)) for f in files]
    except Exception:
        raise UserError(f"cannot read the images of {label} folder '{path}' (corrupt or not an image)") from None


def crop_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """[F,C,H,W] -> [F,C,size,size]: centre-crop to a square, resize (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if s != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def read_video(
    path: str | Path, frames: int, stride: int = 1, start: int = 0, size: int = 64, fps: float = 0.0
) -> Clip:
    """Read, select, centre-crop and resize frames. fps: used for folders (0: DEFAULT_FPS)."""
    if not path:
        raise UserError("no input video: pass --video input.mp4 (or a .gif, or a folder of frames)")
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"video '{path}' does not exist")
    if path.is_dir():
        arrays, src_fps, idx = _read_folder(path, frames, stride, start)
    else:
        arrays, src_fps, idx = _read_file(path, frames, stride, start)
    _check_sizes(arrays, path)
    return Clip(
        frames=_frames_at(arrays, size),
        fps=src_fps or fps or DEFAULT_FPS,
        indices=idx,
        source_size=tuple(arrays[0].shape[:2]),
    )
