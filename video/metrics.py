"""Edit quality: frame consistency, text alignment (CLIP when available locally), and, with the
builtin prior, the project's shape/colour classifier on the edited frames.

Frame consistency is the mean cosine similarity of image embeddings of consecutive frames and
of all frame pairs; the embedding used is named in the result ("clip", "classifier-features"
or "vae-latents", whichever is available first).
"""
from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from gen3d.diffusion.prior import REPO_ROOT

log = logging.getLogger("gen3d")
DEFAULT_CLIP = "openai/clip-vit-base-patch32"


def frame_consistency(emb: torch.Tensor) -> dict:
    """emb [F,D] -> {"consecutive": mean cos(i, i+1), "all_pairs": mean cos(i, j), i < j}."""
    e = F.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    n = e.shape[0]
    pairs = list(itertools.combinations(range(n), 2))
    return {"consecutive": float(sim.diagonal(1).mean()),
            "all_pairs": float(torch.stack([sim[i, j] for i, j in pairs]).mean())}


class Judge:
    """Loads whatever evaluation models exist locally, once per run."""

    def __init__(self, clip_model: str | None, classifier: str, prior):
        self.prior, self.clip, self.classifier = prior, None, None
        self.clip = _load_clip(clip_model)
        path = Path(classifier) if Path(classifier).is_absolute() else REPO_ROOT / classifier
        if (path / "model.safetensors").is_file():
            from gen3d.prior.evaluate import load_classifier

            self.classifier = load_classifier(path)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> tuple[str, torch.Tensor]:
        """frames [F,3,H,W] in [0,1] -> (embedding name, [F,D])."""
        if self.clip is not None:
            model, proc = self.clip
            inputs = proc(images=list(frames.permute(0, 2, 3, 1).cpu().numpy()), return_tensors="pt", do_rescale=False)
            return "clip", model.get_image_features(**inputs)
        if self.classifier is not None:
            p = next(self.classifier.parameters())
            x = frames.to(p.device, p.dtype)
            x = F.interpolate(x, size=(self.classifier.cfg.image_size,) * 2, mode="bilinear", antialias=True)
            return "classifier-features", self.classifier.features(x * 2 - 1).mean(dim=(2, 3))
        lat = self.prior.encode_images(frames.to(self.prior.device, self.prior.dtype))
        return "vae-latents", lat.flatten(1)

    @torch.no_grad()
    def text_alignment(self, frames: torch.Tensor, prompt: str) -> float | None:
        if self.clip is None:
            return None
        model, proc = self.clip
        img = self.embed(frames)[1]
        txt = model.get_text_features(**proc(text=[prompt], return_tensors="pt", padding=True))
        return float((F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T).mean())

    def classify(self, frames: torch.Tensor, prompt: str) -> dict | None:
        """Fractions of frames whose classified colour / shape match the ones named in `prompt`."""
        if self.classifier is None:
            return None
        from gen3d.prior.evaluate import classify
        from gen3d.prior.tokenizer import COLOURS, SHAPES

        shapes, colours = classify(self.classifier, frames)
        words = re.findall(r"[a-z]+", prompt.lower())
        want_shape = next((w for w in words if w in SHAPES), None)
        want_colour = next((w for w in words if w in COLOURS), None)
        out = {"shapes": shapes, "colours": colours}
        if want_shape:
            out["shape_accuracy"] = sum(s == want_shape for s in shapes) / len(shapes)
        if want_colour:
            out["colour_accuracy"] = sum(c == want_colour for c in colours) / len(colours)
        return out

    def report(self, frames: torch.Tensor, prompt: str) -> dict:
        name, emb = self.embed(frames)
        out = {"prompt": prompt, "frame_consistency": {"embedding": name, **frame_consistency(emb)}}
        align = self.text_alignment(frames, prompt)
        if align is not None:
            out["text_alignment_clip"] = align
        cls = self.classify(frames, prompt)
        if cls is not None:
            out["classifier"] = cls
        return out


def _load_clip(name: str | None):
    """(CLIPModel, CLIPProcessor) from a local folder or the hub cache; None when unavailable."""
    try:
        from transformers import CLIPModel, CLIPProcessor

        src = name or DEFAULT_CLIP
        model = CLIPModel.from_pretrained(src, local_files_only=True).eval()
        return model, CLIPProcessor.from_pretrained(src, local_files_only=True)
    except Exception:
        if name:
            log.warning("CLIP model '%s' could not be loaded; text alignment is skipped", name)
        return None
