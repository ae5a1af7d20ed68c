"""Prompt embeddings for guidance: cached on disk, optionally view-dependent (DreamFusion)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from gen3d.diffusion.prior import Prior
from gen3d.diffusion.token_budget import fit_view_prompts, warn_if_truncated
from gen3d.diffusion.views import VIEWS, ViewConfig, view_index, view_prompt
from gen3d.errors import UserError
from gen3d.utils.atomic import atomic_path


@dataclass
class PromptConfig:
    view_dependent: bool = True
    negative_prompt: str = ""
    cache_dir: Optional[str] = ".cache/text_embeddings"  # None: no cache
    views: ViewConfig = field(default_factory=ViewConfig)


def _model_key(prior: Prior) -> str:
    """Identifies the text encoder: its folder plus the size and mtime of its weights."""
    parts = [str(prior.path)]
    for f in sorted((Path(prior.path) / "text_encoder").glob("*")):
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def cached_text_embeddings(prior: Prior, prompts: list[str], cache_dir: str | Path | None) -> torch.Tensor:
    """[len(prompts), L, D] embeddings, read from / written to the cache (keyed by model + prompt)."""
    for prompt in prompts:
        warn_if_truncated(prior.tokenizer, prompt)
    if cache_dir is None:
        return prior.encode_text(prompts)
    cache_dir = Path(cache_dir)
    model_key = _model_key(prior)
    out = []
    for prompt in prompts:
        key = hashlib.sha256(f"{model_key}\n{prompt}".encode()).hexdigest()[:32]
        path = cache_dir / f"{key}.safetensors"
        if path.is_file():
            emb = load_file(path)["embedding"]
        else:
            emb = prior.encode_text([prompt])[0].cpu().contiguous()
            cache_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({"embedding": emb}, str(tmp), metadata={"prompt": prompt})
        out.append(emb)
    return torch.stack(out).to(prior.device, prior.dtype)


def check_vocabulary(model_path: str | Path, text: str) -> None:
    """The builtin prior has a closed vocabulary: reject words it never saw, naming the known ones."""
    from gen3d.diffusion.prior import BUILTIN_PRIOR

    if Path(model_path).resolve() != BUILTIN_PRIOR.resolve():
        return
    from gen3d.prior.tokenizer import check_prompt

    try:
        check_prompt(None, text)
    except ValueError as err:
        raise UserError(
            f"{err}. Either use a Stable Diffusion model for open prompts (--model "
            "stabilityai/stable-diffusion-2-1-base, downloaded on first use, or a local diffusers "
            "folder), or write the prompt in these words"
        ) from None


class PromptEmbeddings:
    """Conditional / unconditional embeddings for one prompt, per view when view-dependent."""

    def __init__(self, prior: Prior, prompt: str, cfg: PromptConfig):
        if not prompt or not prompt.strip():
            raise UserError('the prompt is empty: pass --prompt "a red cube"')
        check_vocabulary(prior.path, prompt)
        self.cfg, self.prompt = cfg, prompt
        texts = fit_view_prompts(prior.tokenizer, prompt, VIEWS, view_prompt) if cfg.view_dependent else [prompt]
        self.cond = cached_text_embeddings(prior, texts, cfg.cache_dir)  # [V, L, D]
        self.uncond = cached_text_embeddings(prior, [cfg.negative_prompt], cfg.cache_dir)  # [1, L, D]
        self.prompts = texts

    def __call__(self, elevation: torch.Tensor, azimuth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings for a batch of cameras: (cond [B,L,D], uncond [B,L,D])."""
        batch = elevation.shape[0]
        if self.cfg.view_dependent:
            idx = view_index(elevation.cpu(), azimuth.cpu(), self.cfg.views).to(self.cond.device)
            cond = self.cond[idx]
        else:
            cond = self.cond.expand(batch, -1, -1)
        return cond, self.uncond.expand(batch, -1, -1)

    def to(self, device) -> PromptEmbeddings:
        self.cond, self.uncond = self.cond.to(device), self.uncond.to(device)
        return self
