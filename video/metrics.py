"""Edit quality: frame consistency, text alignment (CLIP when available locally), and, with the
builtin prior only, the project's shape/colour classifier on the edited frames.

Which judges a run has is stated in metrics.json (`judges`) and in the printed summary: CLIP is
`metrics.clip_model` (a folder, or a hub id fetched on first use), else a local Hugging Face cache hit of
DEFAULT_CLIPS (never the network); without one, text alignment is not measured and the output says so.
The classifier knows only the builtin prior's five shapes and six colours: its colour / shape accuracy is
meaningless on Stable Diffusion edits and is reported for the builtin prior only.

Frame consistency is the mean cosine similarity of image embeddings of consecutive frames and
of all frame pairs; the embedding used is named in the result ("clip", "classifier-features"
or "vae-latents", whichever is available first).

For an edit, `source_agreement` says how well it keeps the source's silhouette: the IoU of the
foreground masks of source and edited frames (foreground: pixels away from the frame's border colour,
meaningful for plain backgrounds such as the demo's) and, with the classifier, the fraction of frames
whose classified shape equals the source frame's (the classifier's error on the source cancels out).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from gen3d.diffusion.token_budget import warn_if_truncated
from gen3d.errors import UserError
from gen3d.resources import shipped_path

log = logging.getLogger("gen3d")
DEFAULT_CLIPS = ("openai/clip-vit-large-patch14", "openai/clip-vit-base-patch32")  # tried in the local cache
NO_CLIP = (
    "no CLIP model available locally: text alignment is not measured (set metrics.clip_model=PATH or a hub id, "
    "or put openai/clip-vit-large-patch14 in the Hugging Face cache)"
)
NO_CLASSIFIER = "colour / shape accuracy: builtin prior only (its classifier knows only the builtin shapes)"


def frame_consistency(emb: torch.Tensor) -> dict:
    """emb [F,D] -> {"consecutive": mean cos(i, i+1), "all_pairs": mean cos(i, j), i < j}."""
    e = F.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    n = e.shape[0]
    pairs = list(itertools.combinations(range(n), 2))
    return {
        "consecutive": float(sim.diagonal(1).mean()),
        "all_pairs": float(torch.stack([sim[i, j] for i, j in pairs]).mean()),
    }


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """PSNR in dB of frames [F,3,H,W] in [0,1], over the pixels where `where` [F,H,W] is true (all if None)."""
    err = (a.float() - b.float()).pow(2).mean(1)
    mse = err.mean() if where is None else err[where].mean()
    return float(10 * torch.log10(1 / mse.clamp(min=1e-10)))


def silhouette_masks(frames: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """frames [F,3,H,W] in [0,1] -> foreground masks [F,H,W] (bool): pixels whose colour differs from the
    frame's background (the median colour of its border pixels) by more than `threshold` in some channel."""
    x = frames.float()
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)  # [F,3,2H+2W]
    background = border.median(dim=-1).values[..., None, None]  # [F,3,1,1]
    return (x - background).abs().amax(dim=1) > threshold


def source_agreement(
    source: torch.Tensor,
    edited: torch.Tensor,
    source_shapes: list[str] | None = None,
    edited_shapes: list[str] | None = None,
) -> dict:
    """source / edited [F,3,H,W] in [0,1] -> silhouette IoU per frame and mean, and (given the classified
    shapes of both) the fraction of frames classified as the same shape as the source frame."""
    a, b = silhouette_masks(source), silhouette_masks(edited.to(source.device))
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    out = {"silhouette_iou": float(iou.mean()), "silhouette_iou_per_frame": [round(float(v), 4) for v in iou]}
    if source_shapes is not None and edited_shapes is not None:
        out["shape_agreement"] = sum(s == e for s, e in zip(source_shapes, edited_shapes)) / len(source_shapes)
    return out


class Judge:
    """Loads whatever evaluation models exist locally, once per run."""

    def __init__(self, clip_model: str | None, classifier: str | None, prior):
        """classifier: the builtin classifier's folder, None for other priors (see module doc)."""
        self.prior, self.clip, self.classifier = prior, None, None
        self.clip_name, self.clip = _load_clip(clip_model)
        path = None if classifier is None else shipped_path(classifier)
        if path is not None and (path / "model.safetensors").is_file():
            from gen3d.prior.evaluate import load_classifier

            self.classifier = load_classifier(path)
        self.classifier_path = str(path) if self.classifier is not None else None

    def judges(self) -> dict:
        """What measured this run (metrics.json `judges`), with a plain note for each judge that is absent."""
        notes = [] if self.clip is not None else [NO_CLIP]
        if self.classifier is None:
            notes.append(NO_CLASSIFIER)
        return {"clip": self.clip_name, "classifier": self.classifier_path, "notes": notes}

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> tuple[str, torch.Tensor]:
        """frames [F,3,H,W] in [0,1] -> (embedding name, [F,D])."""
        if self.clip is not None:
            model, proc = self.clip
            inputs = proc(
                images=list(frames.float().permute(0, 2, 3, 1).cpu().numpy()), return_tensors="pt", do_rescale=False
            )
            return "clip", _pooled(model.get_image_features(pixel_values=inputs["pixel_values"].to(model.dtype)))
        if self.classifier is not None:
            p = next(self.classifier.parameters())
            x = frames.to(p.device, p.dtype)
            x = F.interpolate(x, size=(self.classifier.cfg.image_size,) * 2, mode="bilinear", antialias=True)
            return "classifier-features", self.classifier.features(x * 2 - 1).mean(dim=(2, 3))
        lat = self.prior.encode_images(frames.to(self.prior.device, self.prior.dtype))
        return "vae-latents", lat.flatten(1)

    @torch.no_grad()
    def text_alignment(self, frames: torch.Tensor, prompt: str, image_emb: torch.Tensor | None = None) -> float | None:
        """Mean over frames of cos(CLIP image features, CLIP text features of `prompt`); None without CLIP.

        image_emb: the frames' CLIP image features [F,D] when already computed (`embed`)."""
        if self.clip is None:
            return None
        model, proc = self.clip
        img = self.embed(frames)[1] if image_emb is None else image_emb
        warn_if_truncated(proc.tokenizer, prompt)
        tokens = proc(text=[prompt], return_tensors="pt", padding=True, truncation=True)  # long prompts: cut
        txt = _pooled(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return float((F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).T).mean())

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

    def report(self, frames: torch.Tensor, prompt: str, source: tuple[torch.Tensor, dict] | None = None) -> dict:
        """frames [F,3,H,W] in [0,1] judged against `prompt`; source: (source frames, their report) for an
        edit, adding `source_agreement`."""
        name, emb = self.embed(frames)
        out = {"prompt": prompt, "frame_consistency": {"embedding": name, **frame_consistency(emb)}}
        align = self.text_alignment(frames, prompt, emb if name == "clip" else None)
        if align is not None:
            out["text_alignment_clip"] = align
        cls = self.classify(frames, prompt)
        if cls is not None:
            out["classifier"] = cls
        if source is not None:
            src_frames, src_report = source
            src_shapes = (src_report.get("classifier") or {}).get("shapes")
            out["source_agreement"] = source_agreement(src_frames, frames, src_shapes, (cls or {}).get("shapes"))
        return out


def _pooled(out) -> torch.Tensor:
    """CLIPModel.get_{image,text}_features: a tensor [B,D] (transformers 4) or an output whose
    pooler_output is the projected features (transformers 5)."""
    return out if torch.is_tensor(out) else out.pooler_output


def check_clip_model(name: str | None) -> Path | None:
    """metrics.clip_model -> its local folder (a hub id is fetched on first use); UserError when it is not a
    CLIP model folder. None: not set."""
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.exists():
        from gen3d.diffusion.hub import fetch, is_hub_id

        if not is_hub_id(name):
            raise UserError(f"metrics.clip_model '{name}' not found: neither a local folder nor a hub id")
        path = fetch(name)
    try:
        kind = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        raise UserError(f"metrics.clip_model '{name}' has no readable config.json (a transformers CLIPModel)") from None
    if kind != "clip":
        raise UserError(f"metrics.clip_model '{name}' is not a CLIP model: its config.json says model_type {kind!r}")
    return path


def _cached_clip() -> tuple[str, Path] | None:
    """(hub id, snapshot folder) of the first of DEFAULT_CLIPS in the local Hugging Face cache (no network)."""
    from gen3d.diffusion.hub import cached_snapshot

    for repo in DEFAULT_CLIPS:
        snap = cached_snapshot(repo)
        if snap is not None and (snap / "config.json").is_file():
            return repo, snap
    return None


def _load_clip(name: str | None):
    """(name, (CLIPModel, CLIPProcessor)) from metrics.clip_model or the local cache; (None, None) when none."""
    from transformers import CLIPModel, CLIPProcessor

    found = (name, check_clip_model(name)) if name else _cached_clip()
    if found is None:
        return None, None
    label, src = found
    try:
        model = CLIPModel.from_pretrained(src, local_files_only=True).eval()
        return label, (model, CLIPProcessor.from_pretrained(src, local_files_only=True))
    except (OSError, ValueError) as err:
        if name:  # checked in validate: a folder that looks right but does not load
            raise UserError(f"cannot load metrics.clip_model '{name}': {str(err).splitlines()[0]}") from None
        log.warning("the cached CLIP model '%s' does not load (%s); text alignment is skipped", src, err)
        return None, None
