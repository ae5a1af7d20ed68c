"""rgb_as_latents (Latent-NeRF; stable-dreamfusion's latent mode): the NeRF renders the prior's latents.

With `Text3DConfig.rgb_as_latents` the field's albedo head and the background output the prior's
latent channels (unbounded, no sigmoid), the cameras render at the latent size, and the guidance
takes the renders as latents (`SDSGuidance.loss_from_latents`: no VAE encoder in the loop). What
people see stays RGB: previews and turntables are decoded by the prior's VAE (`decode_views`), and
the exported texture goes through a linear latent -> RGB map fitted on the trained field's views
(`fit_latent_to_rgb`, an approximation; see gen3d/export/latent_rgb.py).

`view_space(cfg)` is the one place `rgb_as_latents` is read: the system renders, trains and shows
its particles through the space it returns (`RGBSpace` or `LatentSpace`), never by the flag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from gen3d.diffusion.prior import Prior, model_info
from gen3d.errors import UserError
from gen3d.export.latent_rgb import LinearMap, fit_linear_map, pixel_pairs
from gen3d.render.cameras import Cameras, make_cameras
from gen3d.representations import representation
from gen3d.utils.schedule import schedule_values

log = logging.getLogger("gen3d")

FIT_ELEVATIONS = (15.0, 45.0)  # views the export's latent -> RGB fit is made on (8 azimuths each)
FIT_AZIMUTHS = 8


def latent_channels(cfg: Any, prior: Prior | None = None) -> int | None:
    """Channels the field and the background output: the prior's UNet input channels under
    rgb_as_latents (read from the model folder when the prior is not loaded yet), else None (RGB)."""
    if not cfg.rgb_as_latents:
        return None
    if prior is not None:
        return int(prior.unet.config.in_channels)
    return model_info(cfg.model).latent_channels


def check_config(cfg: Any) -> None:
    """One stage's config (UserError): latents need a representation that renders them (a NeRF),
    albedo shading and the MLP background."""
    if not cfg.rgb_as_latents:
        return
    if not representation(cfg.representation).renders_latents:
        raise UserError(
            f"rgb_as_latents works on NeRF (volume) stages only, not with representation '{cfg.representation}'"
        )
    if any(v not in (None, "albedo") for v in schedule_values(cfg.force_shading)):  # a value or a step schedule
        raise UserError(
            f"rgb_as_latents renders latents with albedo shading only (force_shading is {cfg.force_shading!r})"
        )
    if cfg.background.type != "mlp":
        raise UserError(
            f"rgb_as_latents needs background.type=mlp (it learns latents); '{cfg.background.type}' is an RGB colour"
        )


def check_stages(stage_cfgs: list[Any]) -> None:
    """Across stages, and the prior (its model_index.json only): UserError before anything is written."""
    if len({s.rgb_as_latents for s in stage_cfgs}) > 1:
        raise UserError(
            "rgb_as_latents must be the same in every stage (a stage cannot start from a NeRF of the other kind)"
        )
    for s in stage_cfgs:
        if s.rgb_as_latents and not model_info(s.model).has_vae:
            raise UserError(f"model '{s.model}' has no VAE: rgb_as_latents needs a latent diffusion prior")


def latent_cameras(cams: Cameras, prior: Prior) -> Cameras:
    """The same views at the latent size: height and width divided by the VAE's factor (rounded)."""
    factor = max(1, prior.image_size // prior.latent_size)
    return replace(cams, height=max(1, round(cams.height / factor)), width=max(1, round(cams.width / factor)))


@torch.no_grad()
def decode_views(prior: Prior, views: dict, chunk: int = 8) -> dict:
    """views with rgb = rendered latents [N,h,w,C] -> rgb [N,H,W,3] decoded by the prior's VAE;
    the latents are kept under `latents`, normal [N,h,w,3] is resized to H x W (nearest)."""
    latents = views["rgb"]
    decoded = [
        prior.decode_latents(latents[i : i + chunk].permute(0, 3, 1, 2).to(prior.device)).float().cpu()
        for i in range(0, len(latents), chunk)
    ]
    rgb = torch.cat(decoded).permute(0, 2, 3, 1)
    normal = F.interpolate(views["normal"].permute(0, 3, 1, 2), size=rgb.shape[1:3], mode="nearest")
    return {**views, "latents": latents, "rgb": rgb, "normal": normal.permute(0, 2, 3, 1)}


def fit_cameras(
    elevation_offsets=FIT_ELEVATIONS,
    n_azimuths: int = FIT_AZIMUTHS,
    distance: float = 2.3,
    fovy: float = 50.0,
    size: int = 128,
) -> Cameras:
    """Views around the object for the latent -> RGB fit."""
    el = torch.tensor(elevation_offsets, dtype=torch.float32).repeat_interleave(n_azimuths)
    az = torch.arange(n_azimuths, dtype=torch.float32).repeat(len(elevation_offsets)) * (360.0 / n_azimuths)
    n = len(el)
    return make_cameras(el, az, torch.full((n,), distance), torch.full((n,), fovy), size, size)


def fit_latent_to_rgb(render: Callable[[Cameras], dict], turntable: Any) -> LinearMap:
    """The linear latent -> RGB map of one trained particle (render: cameras -> its decoded views, with
    `latents`), for baking its albedo into a texture. turntable: distance, fovy, resolution of the fit views."""
    t = turntable
    views = render(fit_cameras(distance=t.distance, fovy=t.fovy, size=t.resolution))
    latents, rgb = pixel_pairs(views["latents"], views["rgb"], views["opacity"][..., 0] > 0.5)
    fitted = fit_linear_map(latents, rgb)
    rms = float((fitted(latents) - rgb).square().mean().sqrt())
    log.info("rgb_as_latents: latent -> RGB linear map fitted on %d pixels (rms error %.3f)", len(rgb), rms)
    return fitted


class RGBSpace:
    """The particles render RGB: the guidance encodes them with the VAE, people see them as they are."""

    latents = False
    needs_prior = False  # to show views

    def channels(self, cfg: Any, prior: Prior | None = None) -> int | None:
        return None

    def shading(self, shading: str) -> str:
        return shading

    def view(self, cams: Cameras, shading: str, prior: Prior | None) -> tuple[Cameras, str]:
        return cams, shading

    def decode(self, prior: Prior | None, views: dict) -> dict:
        return views

    def albedo_to_rgb(self, render: Callable[[Cameras], dict], turntable: Any) -> Callable | None:
        return None


class LatentSpace(RGBSpace):
    """rgb_as_latents: the particles render the prior's latents at the latent size, albedo shading only;
    views are VAE-decoded; the texture goes through a fitted linear latent -> RGB map."""

    latents = True
    needs_prior = True

    def channels(self, cfg: Any, prior: Prior | None = None) -> int | None:
        return latent_channels(cfg, prior)

    def shading(self, shading: str) -> str:
        return "albedo"  # lighting latents means nothing

    def view(self, cams: Cameras, shading: str, prior: Prior | None) -> tuple[Cameras, str]:
        return latent_cameras(cams, prior), "albedo"

    def decode(self, prior: Prior | None, views: dict) -> dict:
        return decode_views(prior, views)

    def albedo_to_rgb(self, render: Callable[[Cameras], dict], turntable: Any) -> Callable | None:
        return fit_latent_to_rgb(render, turntable)


def view_space(cfg: Any) -> RGBSpace:
    return LatentSpace() if cfg.rgb_as_latents else RGBSpace()
