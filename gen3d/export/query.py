"""Chunked, gradient-free evaluation of a field callable on many points."""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import numpy as np
import torch

FieldFn = Callable[[torch.Tensor], torch.Tensor]
Device = Union[str, torch.device, None]


def query_field(fn: FieldFn, points: np.ndarray, chunk_size: int, device: Device = None) -> np.ndarray:
    """Evaluate ``fn`` on ``points`` in chunks under ``torch.no_grad``.

    Args:
        fn: maps float32 points ``[n, 3]`` (on ``device``) to ``[n]`` or ``[n, C]``.
        points: ``[N, 3]`` world points.
        chunk_size: points per call.
        device: where the points are sent (default CPU).
    Returns:
        float32 array ``[N, C]`` (``C = 1`` for scalar outputs).
    """
    pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    outs = []
    with torch.no_grad():
        for start in range(0, pts.shape[0], max(1, int(chunk_size))):
            chunk = pts[start : start + chunk_size].to(device or "cpu")
            out = fn(chunk)
            out = out.reshape(chunk.shape[0], -1)
            outs.append(out.detach().float().cpu())
    if not outs:
        return np.zeros((0, 1), dtype=np.float32)
    return torch.cat(outs, dim=0).numpy()
