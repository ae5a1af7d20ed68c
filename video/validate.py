"""Checks of a video-editing run done before anything is written (`validate`): light imports only
(no diffusers, no Lightning), so that a bad input fails fast. Value ranges are declared in video/config.py."""

from __future__ import annotations

from pathlib import Path

import torch

from gen3d.diffusion.prior import resolve_model
from gen3d.errors import UserError
from gen3d.utils.device import prior_dtype, resolve_accelerator
from video.config import VideoEditConfig
from video.control import parse_controls
from video.controlnets import resolve_controlnets
from video.io import read_video
from video.metrics import check_clip_model

SYSTEMS = ("video", "tuneavideo", "controlvideo")  # one system; the last two are its older names
PRECISIONS = {torch.float32: "32-true", torch.float16: "16-mixed", torch.bfloat16: "bf16-mixed"}


def is_builtin(model: str) -> bool:
    from gen3d.diffusion.prior import BUILTIN_PRIOR

    return model == "builtin" or Path(model).expanduser().resolve() == BUILTIN_PRIOR.resolve()


def run_settings(cfg: VideoEditConfig) -> tuple[torch.device, torch.dtype, str]:
    """(device, dtype of the frozen prior, Lightning precision) of a run; UserError for impossible choices."""
    device = torch.device("cuda" if resolve_accelerator(cfg) in ("cuda", "gpu") else "cpu")
    dtype = prior_dtype(cfg.model_dtype, device)
    if dtype == torch.float16 and device.type == "cpu":
        raise UserError(
            "model_dtype=float16 on the CPU: many CPU kernels have no float16 and the rest are slower than "
            "float32; use model_dtype=bfloat16 (half the memory) or float32"
        )
    precision = str(cfg.trainer.precision)
    if precision == "auto":
        precision = PRECISIONS[dtype]
    elif dtype != torch.float32 and not precision.endswith("mixed"):
        raise UserError(
            f"trainer.precision={precision} with model_dtype={cfg.model_dtype}: a half-precision prior runs "
            f"under autocast, use trainer.precision={PRECISIONS[dtype]} (or auto)"
        )
    return device, dtype, precision


def validate(cfg: VideoEditConfig) -> None:
    """Every check that needs no model weights: UserError on the first problem."""
    if cfg.system not in SYSTEMS:
        raise UserError(f"system must be one of {', '.join(SYSTEMS)} (got {cfg.system!r})")
    resolve_accelerator(cfg)  # an unknown device, or CUDA on a machine without one
    if not cfg.prompt or not cfg.prompt.strip():
        raise UserError('the source caption is empty: pass --prompt "a blue sphere is moving"')
    if not cfg.edit or any(not e or not str(e).strip() for e in cfg.edit):
        raise UserError('no edit prompt: pass --edit "a red sphere is moving" (repeatable)')
    controls = parse_controls(cfg.control)
    if cfg.size % 8:
        raise UserError(f"--size must be a positive multiple of 8 (got {cfg.size})")
    if cfg.sampling.source_attention > 0 and not cfg.sampling.invert:
        raise UserError(
            "sampling.source_attention needs the inverted source latents: set sampling.invert=true "
            "or sampling.source_attention=0"
        )
    if cfg.mask and not cfg.sampling.invert:
        raise UserError("--mask keeps the source outside the mask: it needs sampling.invert=true")
    clip = read_video(cfg.video, cfg.frames, cfg.stride, cfg.start, cfg.size or 64, cfg.fps)
    if cfg.mask:
        from video.blend import read_mask  # imports diffusers' attention: only when a mask is given

        read_mask(cfg.mask, clip.indices, clip.source_size, 8)
    run_settings(cfg)
    model_path = resolve_model(cfg.model)
    kinds = [k for k, _ in controls]
    resolve_controlnets(cfg.controlnet, kinds, model_path, cfg.model, is_builtin(cfg.model))
    check_clip_model(cfg.metrics.clip_model)
    if "depth" in kinds and not (cfg.depth_model and Path(cfg.depth_model).expanduser().is_dir()):
        raise UserError("control 'depth' needs depth_model=PATH (a local transformers depth-estimation model folder)")
