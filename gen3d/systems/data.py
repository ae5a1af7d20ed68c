"""The training data of a text-to-3D run: random cameras, reproducible per (seed, index)."""

from __future__ import annotations

import torch

from gen3d.render.cameras import CameraConfig, Cameras, CameraSampler
from gen3d.utils.schedule import schedule_int


class RandomCameraDataset(torch.utils.data.Dataset):
    """Item i is a random camera drawn with a generator seeded by (seed, i): reproducible, and
    with a DistributedSampler each rank renders its own cameras. start: the index of item 0 (a run
    resumed at step s starts at s * batch size * processes, so it draws the cameras the uninterrupted run
    would have; Lightning restarts the epoch of a resumed run at its restored batch index, so the length
    stays that of the whole run)."""

    def __init__(self, cfg: CameraConfig, length: int, seed: int, start: int = 0):
        self.sampler, self.length, self.seed, self.start = CameraSampler(cfg), length, seed, start

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.start + i)
        cam = self.sampler.sample(1, generator=gen, height=1, width=1)  # the size is the step's (cameras_at_step)
        return {k: v[0] for k, v in vars(cam).items() if torch.is_tensor(v)}


def batch_to_cameras(batch: dict, height: int, width: int) -> Cameras:
    return Cameras(height=height, width=width, **batch)


def step_sizes(cfg, step: int) -> tuple[int, int, int]:
    """(height, width, batch size) of a training step: `camera.height` / `camera.width` /
    `trainer.batch_size` at that step (each a number or a schedule)."""
    return tuple(schedule_int(s, step) for s in (cfg.camera.height, cfg.camera.width, cfg.trainer.batch_size))


def cameras_at_step(batch: dict, cfg, step: int) -> Cameras:
    """The step's cameras: the first `batch_size(step)` of the loader's batch (which holds the schedule's
    largest batch), rendered at the step's size. Depends on the global step only, so a resumed run
    continues at the size of the step it resumes at."""
    height, width, size = step_sizes(cfg, step)
    return batch_to_cameras({k: v[:size] for k, v in batch.items()}, height, width)
