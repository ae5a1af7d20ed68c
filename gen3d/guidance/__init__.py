"""Guidance types: how renders become a loss through the frozen prior (SDS, VSD, ... by name).

A guidance type registers a `GuidanceType` under the name its config's `type` field holds
(`GUIDANCES.register("sds", GuidanceType(...))` in its own module in this package: every module
here is imported on the first lookup). The system calls a built guidance through the `Guidance`
interface only, never by its type:

- `guide(renders, cond, uncond, cameras, step)` -> dict with `loss` (for the 3D parameters, weighed by
  `loss.guidance`), any other `loss_*` terms (the guidance's own parameters, weight 1, logged under their
  names), `t` and `grad_norm`. `renders` are images [B,3,H,W] in [0,1], or the prior's latents
  [B,C,h,w] when the guidance was built with `GuidanceContext.latents` (rgb_as_latents).
- `parameter_groups()`: optimizer groups of the parameters it trains itself (with their lr).
- `modules()`: the trained modules, by name; the system registers them as its submodules so they are
  checkpointed (and restored) under those names (`vsd_lora.*`).
- `state()`: what the next stage's guidance may continue (`GuidanceContext.state`); the runner hands
  it on from stage to stage, through stages of other guidance types unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gen3d.registry import Registry


@dataclass
class GuidanceContext:
    """What a guidance is built with besides the prior and its config."""

    latents: bool = False  # renders are already the prior's latents (rgb_as_latents): no VAE encoder
    state: dict[str, Any] = field(default_factory=dict)  # handed on by earlier stages' guidances
    prompts: Any = None  # the run's PromptEmbeddings (gen3d.diffusion.prompts): every view's, for Perp-Neg


class Guidance(Protocol):
    def guide(
        self, renders: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor, cameras: Any, step: int
    ) -> dict: ...

    def parameter_groups(self) -> list[dict]: ...

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def state(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class GuidanceType:
    config: type  # its config dataclass; checked (unknown keys, types) before anything is written
    build: Callable[[Any, Any, GuidanceContext], Guidance]  # (prior, config, context) -> Guidance
    # it trains modules of its own (checkpointed): built with the system (when the prior is there), so
    # that a checkpoint restores into them
    holds_modules: bool = False
    # checks of a stage's whole config before anything is written (e.g. VSD's lora_model); None: none
    check: Callable[[Any], None] | None = None


GUIDANCES: Registry[GuidanceType] = Registry("guidance type", package="gen3d.guidance")


def guidance_type(name: str) -> GuidanceType:
    return GUIDANCES.get(name, key="guidance.type")


def guidance_config(name: str) -> type:
    """The config dataclass of a guidance type (for the typed `guidance:` section)."""
    return guidance_type(name).config


def build_guidance(prior: Any, cfg: Any, context: GuidanceContext) -> Guidance:
    return guidance_type(cfg.type).build(prior, cfg, context)
