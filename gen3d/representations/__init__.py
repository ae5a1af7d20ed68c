"""Representations: the kinds of 3D model a stage optimises (NeRF volume, textured mesh, ...) by name.

A representation registers an instance of a `Representation` subclass under the name the config's
`representation:` key uses (`REPRESENTATIONS.register("mesh", MeshRepresentation())` in its own module
in this package: every module here is imported on the first lookup). The system and the runner call it
through this interface only:

- `build(cfg, background, latent_channels)`: one particle, a "scene" module holding `.geometry`, called
  as `scene(cameras, shading=..., with_normal=...)` -> dict with comp_rgb [B,H,W,C], opacity, comp_normal
  (the renderers' contract, gen3d/render/volume.py), plus `update_step(step)` and `cfg.shading`.
- `from_previous(scene, previous, cfg)`: start this stage's particle from the previous stage's one.
- `regularisers(scene, out)`: named loss terms; weighed by the `loss:` section's schedule of that name.
- `parameter_groups(scene, cfg)`: its optimizer groups (with lr).
- `export(scene, albedo_fn, out_dir, cfg, device)`: the textured mesh (gen3d.export), returns its stats.
- `can_start`: a method's first stage may use it (a mesh starts from a previous stage's density);
  `renders_latents`: it can render the prior's latents (rgb_as_latents).
- `config`/`check(cfg)`: a representation without a section of its own in Text3DConfig keeps its
  settings under `parts.<name>` and reads them with `settings(cfg)` (checked before anything is written).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gen3d.registry import Registry


class Representation:
    can_start: bool = True
    renders_latents: bool = False
    config: type | None = None  # dataclass of its `parts.<name>` settings (None: it has none there)
    name: str = ""

    def build(self, cfg: Any, background: nn.Module, latent_channels: int | None = None) -> nn.Module:
        raise NotImplementedError

    def from_previous(self, scene: nn.Module, previous: nn.Module, cfg: Any) -> None:
        """Default: the previous particle is of this kind; copy its geometry."""
        scene.geometry.load_state_dict(previous.geometry.state_dict())

    def regularisers(self, scene: nn.Module, out: dict) -> dict[str, torch.Tensor]:
        return {}

    def parameter_groups(self, scene: nn.Module, cfg: Any) -> list[dict]:
        return [{"params": list(scene.geometry.parameters()), "lr": cfg.optimizer.lr}] if cfg.train_geometry else []

    def export(self, scene: nn.Module, albedo_fn, out_dir, cfg: Any, device) -> dict:
        raise NotImplementedError

    def samples_per_pixel(self, cfg: Any) -> int:
        """Points of the field evaluated per pixel in a training step where none are skipped (the memory
        estimate of gen3d/systems/memory.py); a rasterized surface evaluates one."""
        return 1

    def check(self, cfg: Any) -> None:
        """Checks of a stage's config that need this representation (UserError)."""
        self.settings(cfg)

    def settings(self, cfg: Any) -> Any:
        """Its `parts.<name>` settings as its `config` dataclass (UserError for bad keys or values)."""
        if self.config is None:
            return None
        from gen3d.config import build_config

        return build_config(self.config, dict(cfg.parts.get(self.name, {})), prefix=f"parts.{self.name}.")


REPRESENTATIONS: Registry[Representation] = Registry("representation", package="gen3d.representations")


def register(name: str, rep: Representation) -> Representation:
    rep.name = name
    return REPRESENTATIONS.register(name, rep)


def representation(name: str) -> Representation:
    return REPRESENTATIONS.get(name, key="representation")
