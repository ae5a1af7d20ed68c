"""ControlVideo's conditions: per-frame control maps and the ControlNets that read them.

`parse_controls(["canny", "depth:0.5"])` -> [("canny", 1.0), ("depth", 0.5)]. Maps are images
[F,3,H,W] in [0,1]: canny edges with kornia (`gen3d.diffusion.control.canny_maps`); depth with a
transformers depth-estimation model folder the user has (`depth_model=PATH`). `ControlledUNet`
wraps the (inflated) UNet with a diffusers MultiControlNetModel so every UNet call, including the
CFG batch of `Prior.predict_noise`, gets the ControlNet residuals of its frames. Which ControlNet each
control uses, and its checks: `video.controlnets`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from gen3d.diffusion.control import canny_maps
from gen3d.errors import UserError

CONTROL_KINDS = ("canny", "depth")


def parse_controls(specs: list[str]) -> list[tuple[str, float]]:
    """'kind' or 'kind:weight' entries -> [(kind, weight)]; UserError for unknown kinds / bad weights."""
    out = []
    for spec in specs:
        kind, _, weight = str(spec).partition(":")
        kind = kind.strip().lower()
        if kind not in CONTROL_KINDS:
            raise UserError(
                f"unknown --control '{kind}' (known: {', '.join(CONTROL_KINDS)}; add a weight as canny:0.7)"
            )
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise UserError(f"--control '{spec}': the weight after ':' must be a number") from None
        if any(k == kind for k, _ in out):
            raise UserError(f"--control '{kind}' is given twice")
        out.append((kind, w))
    return out


def depth_maps(frames: torch.Tensor, model_path: str | None) -> torch.Tensor:
    """frames [F,3,H,W] -> normalised depth [F,3,H,W] in [0,1] (near = bright), via a local model."""
    if not model_path or not Path(model_path).expanduser().is_dir():
        raise UserError(
            "control 'depth' needs depth_model=PATH: a local transformers depth-estimation model "
            "folder (e.g. a DPT or Depth Anything checkpoint)"
        )
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    try:
        proc = AutoImageProcessor.from_pretrained(model_path)
        model = AutoModelForDepthEstimation.from_pretrained(model_path).eval()
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load depth model '{model_path}': {str(err).splitlines()[0]}") from None
    with torch.no_grad():
        inputs = proc(images=list(frames.permute(0, 2, 3, 1).numpy()), return_tensors="pt", do_rescale=False)
        depth = model(**inputs).predicted_depth[:, None]  # [F,1,h,w], relative inverse depth
    depth = nn.functional.interpolate(depth, size=frames.shape[-2:], mode="bicubic", align_corners=False)
    lo, hi = depth.amin(dim=(1, 2, 3), keepdim=True), depth.amax(dim=(1, 2, 3), keepdim=True)
    return ((depth - lo) / (hi - lo).clamp(min=1e-6)).expand(-1, 3, -1, -1).contiguous()


def control_maps(kind: str, frames: torch.Tensor, cfg) -> torch.Tensor:
    """Dispatch on the control kind; cfg: VideoEditConfig (thresholds, depth_model)."""
    if kind == "canny":
        return canny_maps(frames, cfg.canny_low, cfg.canny_high)
    if kind == "depth":
        return depth_maps(frames, cfg.depth_model)
    raise UserError(f"unknown control '{kind}'")


class ControlledUNet(nn.Module):
    """UNet + ControlNets with fixed per-frame conditions; called like the UNet on [B*F, C, h, w].

    conds: one [F,3,H,W] map per ControlNet (repeated over the B videos of a batch);
    weights: conditioning scale per ControlNet.
    """

    def __init__(self, unet: nn.Module, controlnets: list[nn.Module], conds: list[torch.Tensor], weights: list[float]):
        super().__init__()
        from diffusers.models.controlnets import MultiControlNetModel

        self.unet = unet
        self.controlnet = MultiControlNetModel(controlnets)
        self.weights = list(weights)
        for i, c in enumerate(conds):
            self.register_buffer(f"cond_{i}", c, persistent=False)
        self.n_conds = len(conds)

    @property
    def config(self):
        return self.unet.config

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        cross_attention_kwargs: dict | None = None,
        **kwargs,
    ):
        kw = cross_attention_kwargs or {}
        n = self.cond_0.shape[0]
        reps = sample.shape[0] // n
        conds = [getattr(self, f"cond_{i}").to(sample.dtype).repeat(reps, 1, 1, 1) for i in range(self.n_conds)]
        down, mid = self.controlnet(
            sample,
            timestep,
            encoder_hidden_states,
            controlnet_cond=conds,
            conditioning_scale=self.weights,
            cross_attention_kwargs=kw,
            return_dict=False,
        )
        return self.unet(
            sample,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            cross_attention_kwargs=kw,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            **kwargs,
        )
