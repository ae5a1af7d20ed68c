"""Evaluation of the builtin canny ControlNet (`python -m gen3d.prior.controlnet RUN_DIR --eval`):
samples with and without it on held-out canny maps, judged by the builtin classifier and by edge IoU."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from gen3d.diffusion.control import CONTROLNET_DIR, canny_maps, controlled

from .data import CaptionedImages, PriorDataConfig, image_tensors, render_dataset
from .evaluate import CLASSIFIER_DIR, classify, load_classifier
from .losses import diffusion_loss
from .sampling import save_grid
from .tokenizer import COLOURS, SHAPES


def edge_iou(a: torch.Tensor, b: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """IoU [B] of two edge maps [B,C,H,W] in {0,1}, each dilated by `tolerance` pixels."""
    k = 2 * tolerance + 1
    da = F.max_pool2d(a[:, :1].float(), k, 1, tolerance) > 0.5
    db = F.max_pool2d(b[:, :1].float(), k, 1, tolerance) > 0.5
    return (da & db).flatten(1).sum(1) / (da | db).flatten(1).sum(1).clamp(min=1)


@torch.no_grad()
def evaluate_controlnet(
    prior_path: str = "builtin",
    controlnet_path: str | Path = CONTROLNET_DIR,
    n_images: int = 80,
    seed: int = 4242,
    steps: int = 25,
    guidance_scale: float = 7.5,
    canny_low: float = 0.1,
    canny_high: float = 0.2,
    classifier_path=None,
    grid_path: str | Path | None = None,
    chunk: int = 40,
) -> dict:
    """Sample held-out canny maps with the prior + ControlNet (scale 1) and without it (scale 0),
    with prompts that name the colour only ("a red"), DDIM `steps` steps, the same seeds; and, for
    reference, the prior alone told the shape ("prior_named": "a red cube").

    Returns, for "controlnet", "prior" and "prior_named": shape_acc (the builtin classifier sees the
    shape of the render the canny map came from), seen_as (true shape -> what the classifier saw),
    colour_acc, edge_iou (canny of the sample vs the condition, 1-pixel tolerance), eps_mse (the
    training loss on these held-out renders with their full captions, 4 noise draws each, the same
    noise for all); plus n_images and seconds.
    """
    from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline

    from gen3d.diffusion.prior import load_prior

    t0 = time.time()
    data = render_dataset(PriorDataConfig(n_images=n_images, seed=seed), use_cache=False)
    renders = image_tensors(data["images"])
    conds = canny_maps(renders, canny_low, canny_high)
    colour_only = [f"a {COLOURS[int(c)]}" for c in data["colour"]]
    named = [f"a {COLOURS[int(c)]} {SHAPES[int(k)]}" for c, k in zip(data["colour"], data["shape"])]
    p = load_prior(prior_path)
    pipe = StableDiffusionControlNetPipeline(
        vae=p.vae,
        text_encoder=p.text_encoder,
        tokenizer=p.tokenizer,
        unet=p.unet,
        controlnet=ControlNetModel.from_pretrained(str(controlnet_path)).eval(),
        scheduler=DDIMScheduler.from_config(p.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    clf = load_classifier(classifier_path or CLASSIFIER_DIR)
    torch.manual_seed(seed)
    latents = p.encode_images(renders).repeat(4, 1, 1, 1)
    captions = [CaptionedImages(data, PriorDataConfig()).caption(i, random.Random(i)) for i in range(n_images)] * 4
    result, samples = {"n_images": n_images}, {}
    for name, scale, prompts in (
        ("controlnet", 1.0, colour_only),
        ("prior", 0.0, colour_only),
        ("prior_named", 0.0, named),
    ):
        torch.manual_seed(seed)
        eps_mse = float(
            diffusion_loss(
                controlled(p.unet, pipe.controlnet, conds.repeat(4, 1, 1, 1), scale),
                p.text_encoder,
                p.tokenizer,
                p.alphas_cumprod,
                latents,
                captions,
            )
        )
        imgs = []
        for i in range(0, n_images, chunk):
            g = torch.Generator().manual_seed(seed + i)
            imgs.append(
                pipe(
                    prompts[i : i + chunk],
                    image=conds[i : i + chunk],
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    controlnet_conditioning_scale=scale,
                    generator=g,
                    output_type="pt",
                ).images.clamp(0, 1)
            )
        samples[name] = torch.cat(imgs)
        shapes, colours = classify(clf, samples[name])
        truth = [SHAPES[int(k)] for k in data["shape"]]
        result[name] = dict(
            shape_acc=sum(s == t for s, t in zip(shapes, truth)) / n_images,
            seen_as={t: dict(Counter(s for s, u in zip(shapes, truth) if u == t)) for t in SHAPES},
            colour_acc=sum(c == COLOURS[int(k)] for c, k in zip(colours, data["colour"])) / n_images,
            edge_iou=float(edge_iou(canny_maps(samples[name], canny_low, canny_high), conds).mean()),
            eps_mse=eps_mse,
        )
    result["seconds"] = time.time() - t0
    if grid_path is not None:  # rows: render, its canny map, with ControlNet, without, without but told the shape
        k = min(n_images, 10)
        save_grid(torch.cat([renders[:k], conds[:k], *(v[:k] for v in samples.values())]), grid_path, k)
    return result
