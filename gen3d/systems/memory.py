"""A lower bound on the memory a text-to-3D run needs, checked before anything is written.

Counted (float32): every particle's hash-grid table with its gradient and Adam's two moments (exact),
and, where the torch renderer runs (on the CPU, or `renderer.use_nerfacc=never`), a share of the
encoded features autograd keeps for one step's samples. That renderer's occupancy grid starts full,
so the first steps evaluate every sample inside the box: up to `samples_per_pixel` per pixel (the
representation's: a volume's ray samples over the box's longest chord, one point of a mesh). Only
SAMPLE_SHARE of those are counted, for the shorter chords and rays that miss the box, and everything
else (MLP activations, the prior, normals, intermediate tensors) only adds to it: a run refused here
could not have fitted; one that passes may still run out of memory.
"""

from __future__ import annotations

import math
import os

from gen3d.errors import UserError
from gen3d.geometry.hashgrid import table_entries
from gen3d.representations import representation
from gen3d.utils.schedule import schedule_max

FLOAT = 4  # bytes
PARAM_COPIES = 4  # the value, its gradient, Adam's exp_avg and exp_avg_sq
USABLE = 0.9  # share of the available memory a run may plan to use
SAMPLE_SHARE = 0.25  # of the samples a step can evaluate at most (see above)


def bytes_per_particle(cfg, all_samples: bool) -> int:
    """Lower bound on one particle's memory during training (bytes)."""
    grid = cfg.geometry.hash_grid
    features = grid.n_levels * grid.n_features_per_level
    params = table_entries(grid) * grid.n_features_per_level * FLOAT * PARAM_COPIES
    if not all_samples:
        return params
    # the largest step of the schedules (camera.height / width, trainer.batch_size may change with the step)
    pixels = schedule_max(cfg.trainer.batch_size) * schedule_max(cfg.camera.height) * schedule_max(cfg.camera.width)
    samples = pixels * representation(cfg.representation).samples_per_pixel(cfg) * SAMPLE_SHARE
    return params + int(samples * features * FLOAT)


def available_bytes(device: str) -> tuple[int | None, str]:
    """(bytes available to a run on `device`, a name for it); None when unknown."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory, "the GPU"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024, "this machine"
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
        return (pages * os.sysconf("SC_PAGE_SIZE") if pages else None), "this machine"


def check_memory(cfg, device: str, world: int = 1) -> None:
    """UserError when the lower bound for this process's particles exceeds the memory there is."""
    avail, where = available_bytes(device)
    if not avail:
        return
    all_samples = device != "cuda" or cfg.renderer.use_nerfacc == "never"
    per = bytes_per_particle(cfg, all_samples)
    mine = cfg.particles if cfg.particles == 1 else math.ceil(cfg.particles / max(world, 1))
    need = per * mine
    if need > USABLE * avail:
        what = "hash grids with gradients and Adam state" + (", one step's samples" if all_samples else "")
        raise UserError(
            f"particles={cfg.particles} needs at least {need / 2**30:.1f} GiB per process ({per / 2**20:.0f} MiB "
            f"per particle: {what}), more than the {avail / 2**30:.1f} GiB {where} has available; use fewer "
            "particles, smaller camera.height/width or renderer.num_samples_per_ray, or a smaller geometry.hash_grid"
        )
