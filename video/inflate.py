"""Turn a 2D diffusers UNet (or ControlNet) into a video model, in place, and pick what trains.

No model code is copied: the UNet keeps its class and weights; the self-attention processors
become `FrameAttnProcessor`s, every transformer block's attn1 gets a `temporal` submodule
(`TemporalAttention`, zero output), and every other Attention gets `PassThroughProcessor`.
Call the result with `cross_attention_kwargs={"n_frames": F}` on latents [B*F, C, h, w].
"""

from __future__ import annotations

import torch
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention

from gen3d.errors import UserError
from video.attention import FrameAttnProcessor, PassThroughProcessor, TemporalAttention

TEMPORAL_KINDS = ("tuneavideo", "controlvideo", "none")


def inflate(
    model: torch.nn.Module, spatial: str = "sparse_causal", temporal: str = "tuneavideo", key_frame: int = 0
) -> torch.nn.Module:
    """Inflate `model` (UNet2DConditionModel or ControlNetModel) in place; returns it.

    spatial: attention pattern of attn1 across frames (sparse_causal | key_frame | self).
    temporal: kind of temporal module inserted after attn1 of every transformer block, or "none".
    """
    if temporal not in TEMPORAL_KINDS:
        raise UserError(f"inflation.temporal must be one of {', '.join(TEMPORAL_KINDS)} (got {temporal!r})")
    try:
        frame_proc = FrameAttnProcessor(spatial, key_frame)
    except ValueError as err:
        raise UserError(f"inflation.spatial: {err}") from None
    blocks = [m for m in model.modules() if isinstance(m, BasicTransformerBlock)]
    for block in blocks:
        if temporal != "none" and getattr(block.attn1, "temporal", None) is None:
            block.attn1.temporal = TemporalAttention(block.attn1, temporal).to(block.attn1.to_q.weight.device)
    procs = {}
    for name, module in model.named_modules():
        if isinstance(module, Attention) and ".temporal" not in name:
            procs[name] = frame_proc if name.endswith("attn1") else PassThroughProcessor()
    for name, module in model.named_modules():
        if name in procs:
            module.set_processor(procs[name])
    return model


def select_trainable(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Freeze everything, then unfreeze parameters whose name contains one of `patterns`.

    Returns the names made trainable; UserError when a pattern matches nothing.
    """
    model.requires_grad_(False)
    chosen = []
    for pattern in patterns:
        hits = [n for n, _ in model.named_parameters() if pattern in n]
        if not hits:
            raise UserError(
                f"inflation.trainable: pattern '{pattern}' matches no UNet parameter "
                "(e.g. attn1.to_q, attn2.to_q, attn1.to_out, temporal)"
            )
        chosen.extend(hits)
    params = dict(model.named_parameters())
    for n in chosen:
        params[n].requires_grad_(True)
    return sorted(set(chosen))
