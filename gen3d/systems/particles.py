"""Particles (independent 3D models of one run) over DDP ranks, and checkpoints that hold all of them.

`ParticleMixin` goes on the Lightning system; it expects `self.scenes` (an nn.ModuleDict by global
particle index "0", "1", ...) and `self.cfg.particles`.
"""

from __future__ import annotations

import logging

from torch import nn

from gen3d.errors import UserError

log = logging.getLogger("gen3d")


def particles_of_rank(particles: int, rank: int, world: int) -> list[int]:
    """Global indices of the particles `rank` trains: all of them for one particle (data-parallel over
    cameras), else an equal share (UserError when they do not divide over the ranks)."""
    if particles == 1 or world == 1:
        return list(range(particles))
    if particles % world:
        raise UserError(
            f"--particles {particles} does not divide over {world} processes: use a multiple of {world} "
            "(or 1 particle, trained data-parallel by all processes)"
        )
    return list(range(rank, particles, world))


class ParticleMixin:
    scenes: nn.ModuleDict

    def particle_ids(self) -> list[int]:
        """Global indices of the particles this process holds."""
        return sorted(int(k) for k in self.scenes)

    def scene(self, particle: int) -> nn.Module:
        return self.scenes[str(particle)]

    def particle_index(self, step: int) -> int:
        """Round-robin over the particles this rank holds (global index)."""
        ids = self.particle_ids()
        return ids[step % len(ids)]

    def keep_particles(self, ids: list[int]) -> None:
        """Drop the particles other ranks own (before DDP wraps the module)."""
        for key in [k for k in self.scenes if int(k) not in ids]:
            del self.scenes[key]

    def ddp_local_names(self) -> list[str]:
        """Parameters and buffers DDP must neither all-reduce nor broadcast: this rank's own particles'
        (when particles are spread over ranks; one particle is trained data-parallel by all ranks)."""
        if self.cfg.particles == 1:
            return []
        return [f"scenes.{n}" for n, _ in self.scenes.named_parameters()] + [
            f"scenes.{n}" for n, _ in self.scenes.named_buffers()
        ]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank calls this: gather all particles (and each rank's optimizer state) into the
        checkpoint that rank 0 writes, so it holds the whole run whatever the number of ranks."""
        trainer = self._trainer
        if trainer is None or trainer.world_size < 2 or self.cfg.particles == 1:
            return
        import torch.distributed as dist

        mine = {k: v.detach().cpu() for k, v in checkpoint["state_dict"].items() if k.startswith("scenes.")}
        every = [None] * trainer.world_size
        dist.all_gather_object(every, (mine, checkpoint.get("optimizer_states")))
        for states, _ in every:
            checkpoint["state_dict"].update(states)
        checkpoint["gen3d_rank_optimizer_states"] = [opt for _, opt in every]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep this rank's particles of a checkpoint that holds all of them; its own optimizer state
        when the number of ranks is unchanged, else fresh Adam moments (logged)."""
        local = {f"scenes.{k}." for k in self.scenes}
        checkpoint["state_dict"] = {
            k: v
            for k, v in checkpoint["state_dict"].items()
            if not k.startswith("scenes.") or any(k.startswith(p) for p in local)
        }
        per_rank = checkpoint.pop("gen3d_rank_optimizer_states", None)
        trainer, world = self._trainer, self._trainer.world_size if self._trainer is not None else 1
        if trainer is None or "optimizer_states" not in checkpoint:
            return
        if per_rank is not None and len(per_rank) == world:
            checkpoint["optimizer_states"] = per_rank[trainer.global_rank]
        elif per_rank is not None or (world > 1 and self.cfg.particles > 1):
            log.warning(
                "resuming %d particles on %d process(es) from a run with another layout: optimizer moments restart",
                self.cfg.particles,
                world,
            )
            checkpoint["optimizer_states"] = [self.configure_optimizers().state_dict()]
