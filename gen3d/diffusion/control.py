"""ControlNet pieces shared by the builtin ControlNet's training (gen3d.prior) and ControlVideo (video):
canny edge maps of images, and a UNet call with a ControlNet's residuals added."""

from __future__ import annotations

import torch

CONTROLNET_DIR = "extern/builtin-controlnet-canny"  # the builtin canny ControlNet, relative to the repository


def canny_maps(frames: torch.Tensor, low: float = 0.1, high: float = 0.2) -> torch.Tensor:
    """frames [F,3,H,W] in [0,1] -> edge maps [F,3,H,W] in {0,1} (kornia's Canny)."""
    import kornia

    gray = kornia.color.rgb_to_grayscale(frames.float())
    _, edges = kornia.filters.canny(gray, low_threshold=low, high_threshold=high)
    return edges.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def controlled(unet, controlnet, cond: torch.Tensor, scale: float = 1.0):
    """UNet-like callable (sample, t, encoder_hidden_states=) -> output with .sample, the ControlNet's
    residuals of the condition cond [B,3,H,W] added to the UNet (what gen3d.prior.losses.diffusion_loss calls)."""

    def call(sample, t, encoder_hidden_states):
        down, mid = controlnet(
            sample, t, encoder_hidden_states, controlnet_cond=cond, conditioning_scale=scale, return_dict=False
        )
        return unet(
            sample,
            t,
            encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )

    return call
