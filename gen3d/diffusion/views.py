"""DreamFusion's view-dependent prompting: a suffix chosen from the camera's azimuth/elevation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

VIEWS = ("front", "side", "back", "overhead")


@dataclass
class ViewConfig:
    front_threshold: float = 45.0  # |azimuth| below this: front (degrees)
    back_threshold: float = 45.0  # |azimuth| above 180 - this: back
    overhead_threshold: float = 60.0  # elevation above this: overhead


def view_index(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor, cfg: ViewConfig = ViewConfig()) -> torch.Tensor:
    """Index into VIEWS for each camera ([B] long)."""
    az = (torch.as_tensor(azimuth_deg, dtype=torch.float32) + 180.0) % 360.0 - 180.0
    el = torch.as_tensor(elevation_deg, dtype=torch.float32)
    idx = torch.ones_like(az, dtype=torch.long)  # side
    idx = torch.where(az.abs() < cfg.front_threshold, torch.zeros_like(idx), idx)
    idx = torch.where(az.abs() > 180.0 - cfg.back_threshold, torch.full_like(idx, 2), idx)
    idx = torch.where(el > cfg.overhead_threshold, torch.full_like(idx, 3), idx)
    return idx


def view_prompt(prompt: str, view: str) -> str:
    """'a red cube' + 'front' -> 'a red cube, front view'."""
    return f"{prompt}, {view} view"
