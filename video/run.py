"""The video-editing system: run_video(cfg, run_dir, ...), checked first by video/validate.py (before anything is written).

run_video: read the clip -> encode frames to latents -> inflate the prior's UNet (and ControlNets)
-> fine-tune with Lightning on (video, source caption) -> DDIM-invert with the source caption
(and the controls) -> for each edit prompt, sample with CFG from the inverted latents -> write
edit-<i>.mp4/.gif, frames/edit-<i>/*.png, compare-<i>.mp4 (source | edit), metrics.json.
Every file is written atomically; metrics.json is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from functools import partial
from pathlib import Path

import torch

from gen3d.config import to_yaml
from gen3d.diffusion.prior import load_prior
from gen3d.diffusion.prompts import cached_text_embeddings
from gen3d.errors import UserError
from gen3d.reliability import lineage
from gen3d.utils.atomic import write_text_atomic
from gen3d.utils.device import DTYPES, resolve_accelerator
from gen3d.utils.distributed import global_rank
from gen3d.utils.media import save_image, write_video
from gen3d.utils.progress import record_stage_time
from video.blend import (
    common_words,
    compose,
    edit_guidance,
    edit_renoise,
    edit_reweight,
    edit_unconds,
    guidance_away,
    make_blend,
    pixel_mask,
    read_mask,
)
from video.config import CPU_DEFAULT_SIZE, VideoEditConfig
from video.control import ControlledUNet, control_maps, parse_controls
from video.controlnets import load_controlnets, resolve_controlnets
from video.ddim import ddim_edit, ddim_invert, make_eps
from video.inflate import inflate, select_trainable
from video.io import read_video
from video.metrics import Judge
from video.tune import VideoTuner, check_trainable, fine_tune, load_trainable
from video.validate import is_builtin, run_settings, validate

log = logging.getLogger("gen3d")


def working_size(cfg: VideoEditConfig, native: int, device: torch.device) -> int:
    """--size, or (size=0) the prior's native size on CUDA and at most CPU_DEFAULT_SIZE on the CPU."""
    if cfg.size:
        return cfg.size
    return native if device.type == "cuda" else min(native, CPU_DEFAULT_SIZE)


def resolved(cfg: VideoEditConfig, size: int, dtype: torch.dtype, precision: str) -> VideoEditConfig:
    """The config as run (config.yaml): the working size, dtype and precision that `auto` / 0 stood for."""
    name = next(k for k, v in DTYPES.items() if v == dtype)
    trainer = dataclasses.replace(cfg.trainer, precision=precision)
    return dataclasses.replace(cfg, size=size, model_dtype=name, trainer=trainer)


def model_prompt(prior, text: str) -> str:
    """For a closed-vocabulary tokenizer (the builtin prior's), drop the words it does not know."""
    if len(prior.tokenizer.get_vocab()) > 5000:
        return text
    from gen3d.prior.tokenizer import check_prompt

    kept, dropped = [], []
    for word in re.findall(r"[^\s,]+|,", text):
        try:
            check_prompt(prior.tokenizer, word)
            kept.append(word)
        except ValueError:
            dropped.append(word)
    if dropped:
        log.warning("the model does not know %s; using '%s'", ", ".join(repr(w) for w in dropped), " ".join(kept))
    return " ".join(kept).replace(" ,", ",")


@torch.no_grad()
def encode_frames(prior, frames: torch.Tensor) -> torch.Tensor:
    """frames [F,3,H,W] in [0,1] at the working size -> latents [F,C,h,w] (posterior mean: deterministic)."""
    return prior.encode_images(frames.to(prior.device), sample=False, resize=False)


def build_model(cfg: VideoEditConfig, prior, frames: torch.Tensor, run_dir: Path | None = None) -> torch.nn.Module:
    """Inflate the prior's UNet in place (and wrap it with ControlNets for ControlVideo)."""
    inf = cfg.inflation
    unet = inflate(prior.unet, inf.spatial, inf.temporal, inf.key_frame)
    names = select_trainable(unet, inf.trainable)
    for p in unet.parameters():  # under a half-precision prior the fine-tuned weights (and AdamW) stay float32
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    log.info(
        "fine-tuning %d tensors (%.2fM parameters)",
        len(names),
        sum(p.numel() for p in unet.parameters() if p.requires_grad) / 1e6,
    )
    controls = parse_controls(cfg.control)
    if not controls:
        return unet
    kinds = [k for k, _ in controls]
    paths = resolve_controlnets(cfg.controlnet, kinds, prior.path, cfg.model, is_builtin(cfg.model))
    nets = [
        inflate(n, inf.spatial, "none", inf.key_frame).to(prior.device) for n in load_controlnets(paths, prior.dtype)
    ]
    conds = []
    for kind, _ in controls:
        maps = control_maps(kind, frames.cpu(), cfg)
        if run_dir is not None:
            write_video(run_dir / f"control-{kind}.mp4", maps.permute(0, 2, 3, 1), fps=8)
        conds.append(maps.to(prior.device, prior.dtype))
    return ControlledUNet(unet, nets, conds, [w for _, w in controls])


def _autocast(precision: str, device: torch.device):
    """Sampling under the fine-tuning's mixed precision (a half-precision prior with float32 fine-tuned weights);
    on the CPU autocast is bfloat16, as Lightning's mixed precision is there."""
    if not precision.endswith("mixed"):
        return contextlib.nullcontext()
    half = torch.bfloat16 if precision.startswith("bf16") or device.type == "cpu" else torch.float16
    return torch.autocast(device.type, dtype=half)


def write_edit(run_dir: Path, i: int, source: torch.Tensor, edited: torch.Tensor, fps: float) -> dict:
    """source / edited [F,3,H,W] in [0,1] -> edit-i.mp4, edit-i.gif, frames/edit-i/*.png, compare-i.mp4."""
    ed = edited.permute(0, 2, 3, 1).cpu()
    src = source.permute(0, 2, 3, 1).cpu()
    for k, frame in enumerate(ed):
        save_image(run_dir / "frames" / f"edit-{i}" / f"{k:04d}.png", frame)
    paths = {
        "mp4": write_video(run_dir / f"edit-{i}.mp4", ed, fps=fps),
        "gif": write_video(run_dir / f"edit-{i}.gif", ed, fps=fps),
        "compare": write_video(run_dir / f"compare-{i}.mp4", torch.cat([src, ed], dim=2), fps=fps),
    }
    return {k: str(v) for k, v in paths.items()}


def run_video(cfg: VideoEditConfig, run_dir: Path, resume: Path | None = None, export_only: bool = False) -> dict:
    validate(cfg)
    import lightning as L

    run_dir = Path(run_dir)
    rank = global_rank()
    ckpt_dirs = [("main", run_dir / "ckpts")]
    # --resume RUN_DIR continues the newest loadable checkpoint; an older one branches (gen3d.reliability.lineage)
    states, archive = lineage.plan(ckpt_dirs, Path(resume) if resume else None, export_only)
    saved = states["main"]
    if export_only and saved is None:
        raise UserError("--export-only needs --resume PATH (a run directory or a checkpoint)")
    L.seed_everything(cfg.seed + rank, workers=True, verbose=False)
    accelerator = resolve_accelerator(cfg)
    device, dtype, precision = run_settings(cfg)
    prior = load_prior(cfg.model, device, dtype)
    size = working_size(cfg, prior.image_size, device)
    cfg = resolved(cfg, size, dtype, precision)
    log.info(
        "prior %s in %s on %s, frames at %d px (native %d px), trainer.precision=%s",
        cfg.model,
        cfg.model_dtype,
        device.type,
        size,
        prior.image_size,
        precision,
    )
    clip = read_video(cfg.video, cfg.frames, cfg.stride, cfg.start, size, cfg.fps)
    frames = clip.frames.to(device)
    latents = encode_frames(prior, frames)
    user_mask = read_mask(cfg.mask, clip.indices, clip.source_size, size) if cfg.mask else None
    prompts = [model_prompt(prior, p) for p in [cfg.prompt, *cfg.edit, cfg.sampling.negative_prompt]]
    emb = cached_text_embeddings(prior, prompts, cfg.cache_dir)  # [2 + n_edits, L, D]
    src_emb, edit_embs, neg_emb = emb[:1], emb[1:-1], emb[-1:]

    model = build_model(cfg, prior, frames, run_dir if rank == 0 else None)
    tuner = VideoTuner(model, latents, src_emb, prior.scheduler, cfg.trainer.lr, cfg.trainer.weight_decay)
    if saved is not None:
        check_trainable(tuner, saved)  # before config.yaml changes: a failed resume leaves the run as it was
    if rank == 0:
        lineage.tidy(ckpt_dirs)
        lineage.archive_files(run_dir, archive, states)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
    if export_only:
        load_trainable(tuner, saved)
        is_zero = True
    else:
        trainer = fine_tune(tuner, cfg, run_dir, accelerator, saved)
        is_zero = trainer.is_global_zero
    result = {"run_dir": str(run_dir), "first_loss": tuner.first_loss, "last_loss": tuner.last_loss, "edits": []}
    if not is_zero:
        return result

    model = tuner.model.to(device).eval()
    t0 = time.perf_counter()
    s = cfg.sampling
    with _autocast(precision, device):
        trajectory = [] if s.invert and s.exact_inversion else None
        if s.invert:
            x_t = ddim_invert(make_eps(prior, model, src_emb), latents, prior, s.inversion_steps, trajectory)
            decoded_source = prior.decode_latents(latents).float().cpu()
        judge = Judge(cfg.metrics.clip_model, cfg.metrics.classifier if is_builtin(cfg.model) else None, prior)
        metrics = {"judges": judge.judges(), "source": judge.report(frames.cpu(), cfg.prompt), "edits": []}
        write_video(run_dir / "source.mp4", frames.permute(0, 2, 3, 1).cpu(), fps=clip.fps)
        for i, (text, e) in enumerate(zip(cfg.edit, edit_embs)):
            if not s.invert:
                g = torch.Generator().manual_seed(cfg.seed + i)
                x_t = torch.randn(latents.shape, generator=g).to(device)
            blend = make_blend(
                cfg, prior, model, latents, (prompts[0], prompts[1 + i]), (src_emb, e[None]), user_mask, frames.cpu()
            )
            common = partial(cached_text_embeddings, prior, [common_words(prompts[0], prompts[1 + i])], cfg.cache_dir)
            away = guidance_away(cfg, blend, neg_emb, src_emb, common)
            uncond, early_uncond, early_steps = edit_unconds(cfg, blend, src_emb, away)
            # no source attention, trajectory or blend: plain CFG sampling (ddim_edit then equals ddim_sample)
            out = ddim_edit(
                prior,
                model,
                x_t,
                src_emb,
                e[None],
                uncond,
                edit_guidance(cfg, blend),
                s.steps,
                s.source_attention,
                trajectory,
                trajectory is not None,
                blend,
                edit_reweight(cfg, blend),
                early_uncond,
                early_steps,
                edit_renoise(cfg, blend),
                cfg.seed + i,
            )
            with torch.no_grad():
                edited = prior.decode_latents(out.to(prior.dtype)).float().cpu()
            mask = pixel_mask(blend, frames.cpu(), cfg.local.snap, cfg.local.appearance) if blend is not None else None
            if s.invert and s.pixel_residual:
                edited = compose(frames.cpu(), decoded_source, edited, mask)
            paths = write_edit(run_dir, i, frames.cpu(), edited, clip.fps)
            if mask is not None:
                m = (mask > 0.5).float().permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
                paths["mask"] = str(write_video(run_dir / f"mask-{i}.mp4", m, fps=clip.fps))
            metrics["edits"].append({**judge.report(edited, text, (frames.cpu(), metrics["source"])), "files": paths})
            result["edits"].append(paths)
    metrics.update(fps=clip.fps, frames=clip.indices, size=size, first_loss=tuner.first_loss, last_loss=tuner.last_loss)
    record_stage_time(run_dir, "edit", s.steps * len(cfg.edit), time.perf_counter() - t0)  # inversion + sampling
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    _print_metrics(metrics)
    result["metrics"] = metrics
    return result


def _print_metrics(metrics: dict) -> None:
    judges = metrics.get("judges") or {}
    if judges.get("clip"):
        print(f"metrics: text alignment by CLIP '{judges['clip']}'", flush=True)
    for note in judges.get("notes", []):
        print(f"metrics: {note}", flush=True)
    for label, m in [("source", metrics["source"])] + [(f"edit-{i}", m) for i, m in enumerate(metrics["edits"])]:
        fc = m["frame_consistency"]
        line = (
            f"{label:>8} '{m['prompt']}': frame consistency ({fc['embedding']}) consecutive={fc['consecutive']:.4f} "
            f"all-pairs={fc['all_pairs']:.4f}"
        )
        if "text_alignment_clip" in m:
            line += f" text-alignment(CLIP)={m['text_alignment_clip']:.4f}"
        cls = m.get("classifier") or {}
        for k in ("colour_accuracy", "shape_accuracy"):
            if k in cls:
                line += f" {k.replace('_', '-')}={cls[k]:.2f}"
        agree = m.get("source_agreement") or {}
        for k in ("silhouette_iou", "shape_agreement"):
            if k in agree:
                line += f" {k.replace('_', '-')}={agree[k]:.2f}"
        print(line, flush=True)
