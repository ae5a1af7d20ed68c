"""The object's median colour in a turntable video rendered on a solid background."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np


def turntable_colour(path: Path, background=(1.0, 1.0, 1.0), min_difference: float = 0.25) -> list[float]:
    """Median RGB in [0,1] over every frame's object pixels: those further than ``min_difference``
    (Euclidean RGB) from the solid ``background``; edge pixels blended with it are mostly excluded."""
    frames = np.stack(
        [np.asarray(f, dtype=np.float64)[..., :3] / 255.0 for f in imageio.mimread(str(path), memtest=False)]
    )
    pixels = frames.reshape(-1, 3)
    object_px = pixels[np.linalg.norm(pixels - np.asarray(background), axis=1) > min_difference]
    if len(object_px) == 0:
        raise ValueError(f"{path}: no object pixels (nothing differs from the background)")
    return np.median(object_px, axis=0).tolist()
