"""Process rank and device selection for multi-process runs (Lightning DDP, torchrun, SLURM).

Lightning's launchers re-run `launch.py` for every extra local process; those children must reuse
the run directory that rank 0 created, which rank 0 passes on in GEN3D_RUN_DIR.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gen3d.errors import UserError

RUN_DIR_ENV = "GEN3D_RUN_DIR"


def global_rank() -> int:
    """Rank of this process as set by torchrun (RANK), SLURM (SLURM_PROCID) or Lightning (LOCAL_RANK)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    local = int(os.environ.get("LOCAL_RANK", 0))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if node else 1
    return node * per_node + local


def job_id() -> str | None:
    """Identifier of an externally launched multi-process job (torchrun or SLURM), else None."""
    for key in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        if os.environ.get(key):
            return os.environ[key]
    return None


_STARTED = time.time()  # this process's start (about): markers older than a launch are stale
MARKER_SLACK_S = 600.0  # ranks of one launch start within this many seconds of each other


def _marker(root: Path, job: str) -> Path:
    """The run-directory marker of this job *step*: ranks of a later `srun` step in the same
    allocation (same SLURM_JOB_ID, another SLURM_STEP_ID) never read an earlier step's marker."""
    step = os.environ.get("SLURM_STEP_ID") if "SLURM_JOB_ID" in os.environ else None
    return root / (f".job-{job}" if step is None else f".job-{job}.{step}")


def _fresh(marker: Path) -> bool:
    try:
        return marker.stat().st_mtime >= _STARTED - MARKER_SLACK_S
    except OSError:
        return False


def inherited_run_dir(root: Path, timeout_s: float = 120.0) -> Path | None:
    """On ranks other than 0: the run directory rank 0 created (None on rank 0).

    Processes that Lightning starts get it in GEN3D_RUN_DIR; processes started by torchrun or
    SLURM find it in a marker file rank 0 writes under the output root (shared file system). A
    rank that cannot see it (no shared file system) gets a private scratch directory: ranks other
    than 0 write nothing anyway.
    """
    if global_rank() == 0:
        return None
    value = os.environ.get(RUN_DIR_ENV)
    if value:
        return Path(value)
    job = job_id()
    if job is None:
        return None
    marker, deadline = _marker(root, job), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.is_file() and _fresh(marker):
            return Path(marker.read_text().strip())
        time.sleep(0.5)
    return Path(tempfile.mkdtemp(prefix=f"gen3d-rank{global_rank()}-"))


def share_run_dir(run_dir: Path, root: Path) -> None:
    """Rank 0: tell the other ranks where the run lives (environment for Lightning's children,
    a marker file for torchrun/SLURM jobs)."""
    os.environ[RUN_DIR_ENV] = str(run_dir)
    job = job_id()
    if job is not None and global_rank() == 0:
        from gen3d.utils.atomic import write_text_atomic

        write_text_atomic(_marker(root, job), str(run_dir))


def release_run_dir(root: Path) -> None:
    """Rank 0, when the run ends (also on errors): remove this job step's marker."""
    job = job_id()
    if job is not None and global_rank() == 0:
        _marker(root, job).unlink(missing_ok=True)


def device_overrides(gpus: str | None, devices: int | None, device: str | None) -> dict:
    """Config overrides for --gpus / --devices, with one-line errors for impossible requests."""
    import torch

    out: dict = {}
    if gpus is not None:
        if not torch.cuda.is_available():
            raise UserError(
                "--gpus needs CUDA, and this machine has none (for CPU processes use --device cpu --devices N)"
            )
        available = torch.cuda.device_count()
        try:
            ids = [int(x) for x in gpus.split(",") if x.strip()] if "," in gpus else None
            count = len(ids) if ids is not None else int(gpus)
        except ValueError:
            raise UserError(f"--gpus must be a list like 0,1,2,3 or a count like 4 (got '{gpus}')") from None
        if count < 1 or count > available or (ids and max(ids) >= available):
            raise UserError(f"--gpus {gpus}: this machine has {available} CUDA device(s)")
        out = {"device": "cuda", "trainer": {"devices": ids if ids is not None else count}}
    if devices is not None:
        if devices < 1:
            raise UserError(f"--devices must be at least 1 (got {devices})")
        if (device == "cuda" or gpus) and devices > torch.cuda.device_count():
            raise UserError(f"--devices {devices}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        out.setdefault("trainer", {})["devices"] = devices
    return out


def log_parameter_sync(module, local: Sequence[str] = (), particles: Sequence[int] = ()) -> None:
    """Lightning hook helper (on_train_end) for multi-process runs: check, and log on rank 0, that
    every rank ends with the same shared trainable parameters (all but the names in `local`: the
    particles a rank owns), and which particles each rank holds."""
    import logging

    import torch
    import torch.distributed as dist

    trainer = module.trainer
    if trainer.world_size < 2:
        return
    skip = set(local)
    flat = torch.cat(
        [p.detach().float().reshape(-1) for n, p in module.named_parameters() if p.requires_grad and n not in skip]
        or [torch.zeros(1, device=module.device)]
    )
    checksum = torch.stack([flat.sum(), (flat * (torch.arange(flat.numel(), device=flat.device) % 7)).sum()])
    every = trainer.strategy.all_gather(checksum)
    same = bool(torch.equal(every, every[0:1].expand_as(every)))
    held = [None] * trainer.world_size
    dist.all_gather_object(held, list(particles))
    if trainer.is_global_zero:
        log = logging.getLogger("gen3d")
        log.info("ddp: parameters %s across %d ranks", "identical" if same else "DIFFER", trainer.world_size)
        log.info("ddp: particles per rank %s", held)


def num_nodes() -> int:
    """Nodes of a multi-node job, from what torchrun or SLURM set; 1 otherwise."""
    env = os.environ
    if "SLURM_NNODES" in env and "SLURM_JOB_ID" in env:
        return int(env["SLURM_NNODES"])
    if "TORCHELASTIC_RUN_ID" in env and "LOCAL_WORLD_SIZE" in env:
        return max(1, int(env["WORLD_SIZE"]) // int(env["LOCAL_WORLD_SIZE"]))
    return 1


def devices_per_node(devices) -> int:
    """trainer.devices (a count or a list of device ids) -> number of processes per node."""
    return len(devices) if isinstance(devices, (list, tuple)) else int(devices)


def world_size(devices) -> int:
    """Processes of a run: WORLD_SIZE when an external launcher set it, else devices per node x nodes."""
    if os.environ.get("WORLD_SIZE"):
        return int(os.environ["WORLD_SIZE"])
    return devices_per_node(devices) * num_nodes()


def exclude_from_ddp(module, names: list[str]) -> None:
    """Lightning hook helper (`setup`, before DDP wraps the LightningModule itself): parameters and
    buffers DDP must neither broadcast nor all-reduce (frozen weights, a rank's own particles)."""
    if module.trainer.world_size > 1 and names:
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def _shared_ddp():
    """Lightning's DDP strategy, except that a module sharing no trainable parameter between ranks
    (each rank trains only its own particles, e.g. a mesh stage on a solid background) is not
    wrapped: there is nothing to all-reduce, and torch's DDP refuses such a module."""
    from lightning.pytorch.strategies import DDPStrategy

    class SharedOnlyDDPStrategy(DDPStrategy):
        def configure_ddp(self) -> None:
            ignored = set(getattr(self.model, "_ddp_params_and_buffers_to_ignore", ()))
            if any(p.requires_grad and n not in ignored for n, p in self.model.named_parameters()):
                super().configure_ddp()

    return SharedOnlyDDPStrategy


def parallel_trainer_kwargs(devices) -> dict:
    """Lightning Trainer arguments for `devices` per node: DDP when there is more than one process.

    find_unused_parameters: particles that a rank does not render, and frozen stages, get no
    gradient on that rank."""
    n = devices_per_node(devices)
    nodes = num_nodes()
    strategy = _shared_ddp()(find_unused_parameters=True) if n > 1 or nodes > 1 else "auto"
    return {"devices": devices, "num_nodes": nodes, "strategy": strategy}
