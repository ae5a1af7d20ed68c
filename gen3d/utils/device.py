"""Where a run trains and in which dtype the prior runs: one decision for 3D and video runs.

A config asks for a device with its `device` key (auto | cpu | cuda; `gpu` is read as cuda), which
is also the Lightning accelerator. Every function takes such a config or the requested name itself.
"""

from __future__ import annotations

from typing import Any

import torch

from gen3d.config import DEVICES  # auto | cpu | cuda | gpu (Lightning's name for cuda)
from gen3d.errors import UserError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def requested_device(cfg: Any) -> str:
    """The device name a config's `device` (or a plain string) asks for, before any check."""
    return cfg if isinstance(cfg, str) else cfg.device


def run_device(cfg: Any) -> str:
    """'cuda' or 'cpu': where this run trains (auto = CUDA if present). No checks: see resolve_accelerator."""
    want = requested_device(cfg)
    return "cuda" if want in ("cuda", "gpu") or (want == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_accelerator(cfg: Any) -> str:
    """'cuda' or 'cpu' for Lightning (`run_device`), with one-line errors for impossible requests."""
    want = requested_device(cfg)
    if want == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but this machine has no CUDA device (use --device cpu)")
    if want not in DEVICES:
        raise UserError(f"unknown device '{want}' (use cpu or cuda)")
    return run_device(want)


def prior_dtype(name: str, device: torch.device) -> torch.dtype:
    """model_dtype -> torch dtype; auto: float16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"model_dtype must be auto, {', '.join(DTYPES)} (got '{name}')")
    return DTYPES[name]
