"""Local editing: the region an edit may change, and the blend of the edit with the source outside it.

`differing_tokens(tokenizer, source, edit)` finds the token positions of the words that differ between
the source caption and the edit prompt (difflib on the token ids). The region combines two maps:

* the noise difference (`video.region.noise_difference`, DiffEdit): where the UNet's noise predictions
  under the source caption and the edit prompt differ, computed once before sampling from the clean
  latents; it covers the old object and where the new one would be drawn (a shape edit's union);
* the cross-attention of the differing words (Prompt-to-Prompt's local blend, FateZero's attention
  blending): during sampling the UNet runs on [source branch, edit (cond), edit (uncond)];
  `AttentionBlend` captures the maps (`video.attention.capture_cross_attention`) of the decoder's finest
  cross-attention layers and keeps their running mean over the steps, the source branch's maps at the
  source's differing words (where the old object is) and the edit branch's at the edit's (where the new
  one goes), each min-max normalised per frame; a word whose map covers more than `max_cover` of the
  frame names no place and is left out.

The region is `(1 - w) * difference + w * attention > difference_threshold` (w = attention_weight; 0
when no word names a place; attention alone, thresholded at `threshold`, without a difference map),
dilated by `dilate` latent cells. `FixedMask` holds a user's mask instead. `video.ddim.ddim_edit`
replaces the edit's latents outside the region by the source's after every step; `pixel_mask` snaps
the region to the source frames' edges (`video.region.refine`) and `compose` adds only the decoded
change inside it to the source frames, so what the edit does not name stays as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from gen3d.errors import UserError
from video.attention import capture_cross_attention
from video.region import appearance_split, cells_to_pixels, colour_grow, hysteresis, noise_difference, peaks, refine


def token_ids(tokenizer, text: str) -> list[int]:
    """The tokens of `text` as the text encoder sees them (BOS ... EOS, truncated, not padded)."""
    return tokenizer(text, truncation=True, max_length=tokenizer.model_max_length).input_ids


def differing_tokens(tokenizer, source: str, edit: str) -> tuple[list[int], list[int]]:
    """(positions in the source's tokens, positions in the edit's tokens) of the words that differ."""
    a, b = token_ids(tokenizer, source), token_ids(tokenizer, edit)
    src, dst = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag != "equal":
            src.extend(range(i1, i2))
            dst.extend(range(j1, j2))
    return src, dst


def common_words(source: str, edit: str) -> str:
    """The source caption without the words that differ from the edit prompt ("a green cylinder", "a purple
    cylinder" -> "a cylinder"; difflib on the words)."""
    a, b = source.split(), edit.split()
    blocks = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks()
    return " ".join(w for blk in blocks for w in a[blk.a : blk.a + blk.size])


def _dilate(m: torch.Tensor, cells: int) -> torch.Tensor:
    return F.max_pool2d(m, 2 * cells + 1, stride=1, padding=cells) if cells > 0 else m


class AttentionBlend:
    """The local-edit region from cross-attention and the noise difference (module docstring); masks
    [F,1,h,w] in {0, 1}.

    Only the cross-attention layers whose names contain `layers` are read, and of those the ones at the
    finest resolution (on the builtin prior: the two of up_blocks.1, 8x8; the coarser and the encoder's
    maps do not find the object). A word's map is its running mean over the steps, min-max normalised per
    frame; a map whose region covers more than `max_cover` of the frame names no place (the source
    caption's colour word on the builtin prior attends to the background) and is left out."""

    def __init__(
        self,
        source_tokens: list[int],
        edit_tokens: list[int],
        n_frames: int,
        size: int,
        threshold: float = 0.6,
        dilate: int = 0,
        layers: str = "up_blocks",
        max_cover: float = 0.5,
        difference: torch.Tensor | None = None,
        attention_weight: float = 0.0,
        difference_threshold: float = 0.4,
        seed: float = 0.75,
        frames: torch.Tensor | None = None,
        grow: int = 0,
    ):
        self.source_tokens, self.edit_tokens = list(source_tokens), list(edit_tokens)
        self.f, self.size, self.threshold, self.dilate = n_frames, size, threshold, dilate
        self.layers, self.max_cover = layers, max_cover
        self.difference, self.weight, self.difference_threshold = difference, attention_weight, difference_threshold
        self.seed = seed
        self.sum: torch.Tensor | None = None
        self.calls, self.tokens = 0, 0
        # the cells colour_grow adds to the noise difference's own region (kept in every step's region)
        self.grown: torch.Tensor | None = None
        if difference is not None and frames is not None and grow > 0:
            own = hysteresis(difference, difference_threshold, seed)
            self.grown = colour_grow(own, own * peaks(difference, seed), frames, grow) - own

    def __call__(self, probs: torch.Tensor) -> None:
        """One cross-attention call's probabilities [B*F, N, L] (N = h*w tokens of its resolution)."""
        if probs.shape[1] < self.tokens:
            return
        if probs.shape[1] > self.tokens:  # a finer resolution: start over with it
            self.sum, self.calls, self.tokens = None, 0, probs.shape[1]
        side = int(round(math.sqrt(probs.shape[1])))
        m = rearrange(probs[: 2 * self.f], "b (h w) l -> b l h w", h=side)  # source and edit (cond) videos
        m = F.interpolate(m, size=(self.size, self.size), mode="bilinear", align_corners=False)
        self.sum = m if self.sum is None else self.sum + m
        self.calls += 1

    def capture(self, model: torch.nn.Module):
        return capture_cross_attention(getattr(model, "unet", model), self, self.layers)

    def word_maps(self) -> list[torch.Tensor]:
        """The normalised maps [F,1,h,w] in [0,1] of the source's and the edit's differing words that
        name a place (cover at most max_cover of the frame)."""
        out = []
        if self.sum is None:
            return out
        mean = self.sum / self.calls
        for video, tokens in ((0, self.source_tokens), (1, self.edit_tokens)):
            for tok in tokens:
                m = mean[video * self.f : (video + 1) * self.f, tok : tok + 1]
                lo, hi = m.amin(dim=(2, 3), keepdim=True), m.amax(dim=(2, 3), keepdim=True)
                m = (m - lo) / (hi - lo).clamp(min=1e-8)
                if float((m > self.threshold).float().mean()) <= self.max_cover:
                    out.append(m)
        return out

    def region(self) -> torch.Tensor:
        """The undilated region [F,1,h,w] in {0, 1}."""
        maps = self.word_maps()
        attention = torch.stack(maps).amax(0) if maps else None
        if self.difference is None:
            if attention is None:
                return torch.zeros(self.f, 1, self.size, self.size)
            return (attention > self.threshold).float()
        d = self.difference.to(attention.device) if attention is not None else self.difference
        combined = d if attention is None else (1 - self.weight) * d + self.weight * attention
        region = hysteresis(combined, self.difference_threshold, self.seed, d)
        return region if self.grown is None else torch.maximum(region, self.grown.to(region.device))

    def core(self) -> torch.Tensor:
        """The region's cells [F,1,h,w] in {0, 1} where the noise difference reaches `seed` times the frame's
        largest value (the whole region without a difference map)."""
        region = self.region()
        if self.difference is None:
            return region
        return region * peaks(self.difference.to(region.device), self.seed)

    def mask(self) -> torch.Tensor:
        return _dilate(self.region(), self.dilate)


class FixedMask:
    """A given mask [F,1,H,W] (user's, any resolution): covered latent cells (max-pooled) may change."""

    def __init__(self, mask: torch.Tensor, size: int):
        self.full = m = mask.float()
        self.m = F.adaptive_max_pool2d(m, size) if m.shape[-1] >= size else F.interpolate(m, size=(size, size))

    def capture(self, model: torch.nn.Module):
        return contextlib.nullcontext()

    def mask(self) -> torch.Tensor:
        return (self.m > 0.5).float()


def read_mask(path: str | Path, indices: list[int], video_size: tuple[int, int], size: int) -> torch.Tensor:
    """A user's mask video / folder -> [F,1,size,size] in {0, 1} (white: may change). It needs one frame per
    frame used, or enough frames for the input's --start/--stride selection (which is then applied), and
    the input video's frame size (it is centre-cropped and resized the same way). UserError otherwise."""
    from video.io import crop_resize, read_all_frames

    arrays = read_all_frames(path, "mask")
    n = len(indices)
    if len(arrays) != n and len(arrays) <= indices[-1]:
        raise UserError(
            f"mask '{path}' has {len(arrays)} frames; it needs one per frame used ({n}) "
            f"or one per input frame (at least {indices[-1] + 1})"
        )
    picked = arrays if len(arrays) == n else [arrays[i] for i in indices]
    shapes = {a.shape[:2] for a in picked}
    if shapes != {tuple(video_size)}:
        h, w = sorted(shapes)[0]
        raise UserError(f"mask '{path}' frames are {w}x{h}, the video's are {video_size[1]}x{video_size[0]}")
    x = torch.stack(
        [torch.from_numpy(a.reshape(*a.shape[:2], -1)[..., :3].astype("float32")).mean(-1) / 255.0 for a in picked]
    )[:, None]
    return (crop_resize(x, size) > 0.5).float()


def make_blend(cfg, prior, model, latents, texts: tuple[str, str], embeddings, user_mask=None, frames=None):
    """The blend of one edit: the user's mask (`mask=`), else the region of the differing words
    (`local.enabled`), else None. cfg: VideoEditConfig; latents: the clean source latents [F,C,h,w];
    texts / embeddings: (source, edit) prompts as the model reads them and their embeddings [1,L,D];
    frames: the source frames [F,3,H,W] (for `local.grow`)."""
    if user_mask is not None:
        return FixedMask(user_mask, latents.shape[-1])
    if not cfg.local.enabled or not cfg.sampling.invert:
        return None
    loc = cfg.local
    src, dst = differing_tokens(prior.tokenizer, *texts)
    difference = None
    if loc.difference and (src or dst):
        difference = noise_difference(prior, model, latents, *embeddings, tuple(loc.strengths), loc.draws, cfg.seed)
    return AttentionBlend(
        src,
        dst,
        latents.shape[0],
        latents.shape[-1],
        loc.threshold,
        loc.dilate,
        loc.layers,
        loc.max_cover,
        difference,
        loc.attention_weight,
        loc.difference_threshold,
        loc.seed,
        frames,
        loc.grow,
    )


def pixel_mask(blend, frames: torch.Tensor, snap: bool = True, appearance: bool = True) -> torch.Tensor:
    """The mask a blend used at the frame size [F,1,H,W] in [0, 1]: a user's mask as given; else the
    region upsampled (bilinear) and, with snap, fitted to the edges of the source frames [F,3,H,W] (then
    hard: a soft rim would tint the backdrop around the object); with appearance (and snap) the region's
    parts that look like the outside are dropped first (`video.region.appearance_split`)."""
    size = frames.shape[-1]
    full = getattr(blend, "full", None)
    if full is not None:
        return F.interpolate(full, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1).cpu()
    coarse = blend.region() if snap else blend.mask()
    m = F.interpolate(coarse.float().cpu(), size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    if not snap:
        return m
    band = max(size // coarse.shape[-1], 1)
    hard = (m > 0.5).float()
    if appearance:
        hard = appearance_split(hard, cells_to_pixels(blend.core().cpu(), (size, size)) * hard, frames.cpu(), band)
    return (refine(hard, frames.cpu(), band) > 0.5).float()


def edit_guidance(cfg, blend) -> float:
    """CFG scale of an edit: local.guidance_scale while a local region keeps the background (0: the same
    as sampling.guidance_scale), else sampling.guidance_scale."""
    local = blend is not None and cfg.local.guidance_scale > 0
    return cfg.local.guidance_scale if local else cfg.sampling.guidance_scale


def edit_uncond(cfg, blend, source: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """CFG's unconditional embedding of an edit: the source caption's under negative-prompt inversion,
    except with local.plain_guidance while the region of the differing words keeps the background: then
    the negative prompt's. Negative-prompt inversion keeps an edit equal to the source exact under CFG;
    with such a region it is not needed for that (no word differs: the region is empty), and guidance away
    from the source's words can overshoot to their opposite (green -> purple turned pale pink). A user's
    mask keeps negative-prompt inversion (an edit equal to the source stays exact in it). With
    local.common_guidance the caller passes the source caption without its differing words as `negative`
    (`common_words`)."""
    s = cfg.sampling
    if not (s.invert and s.negative_prompt_inversion):
        return negative
    return negative if _plain_instead_of_npi(cfg, blend) else source


def _plain_instead_of_npi(cfg, blend) -> bool:
    """Negative-prompt inversion is on and local.plain_guidance / common_guidance replace it for this edit
    (the region of the differing words)."""
    s, local = cfg.sampling, cfg.local
    plain = local.plain_guidance or local.common_guidance
    return s.invert and s.negative_prompt_inversion and isinstance(blend, AttentionBlend) and plain


def edit_unconds(cfg, blend, source: torch.Tensor, negative: torch.Tensor):
    """(uncond, early_uncond, early_steps) of an edit for `video.ddim.ddim_edit`: `edit_uncond`'s, except that
    with local.plain_steps < 1 plain guidance covers only the first local.plain_steps of the steps and
    negative-prompt inversion the rest."""
    if _plain_instead_of_npi(cfg, blend) and cfg.local.plain_steps < 1:
        return source, negative, cfg.local.plain_steps
    return edit_uncond(cfg, blend, source, negative), None, 0.0


def guidance_away(cfg, blend, negative: torch.Tensor, source: torch.Tensor, common) -> torch.Tensor:
    """What plain guidance guides away from ([1,L,D]): the negative prompt; with local.common_guidance and the
    region of the differing words, (1 - local.common_mix) * common() + local.common_mix * source, common() being
    the embedding of the source caption without its differing words (`common_words`)."""
    if not (cfg.local.common_guidance and isinstance(blend, AttentionBlend)):
        return negative
    return torch.lerp(common().to(source), source, cfg.local.common_mix)


def edit_reweight(cfg, blend) -> tuple[list[int], float] | None:
    """(the edit prompt's differing tokens, local.reweight) for the region of the differing words, else None."""
    if isinstance(blend, AttentionBlend) and cfg.local.reweight != 1 and blend.edit_tokens:
        return blend.edit_tokens, cfg.local.reweight
    return None


def edit_renoise(cfg, blend) -> float:
    """local.renoise for the region of the differing words (an edit equal to the source has an empty region
    and stays exact), else 0 (a user's mask keeps the inverted latents: an edit equal to the source stays exact
    in it)."""
    return cfg.local.renoise if isinstance(blend, AttentionBlend) else 0.0


def compose(
    source: torch.Tensor, decoded_source: torch.Tensor, decoded_edit: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The edited frames [F,3,H,W]: the source plus what the edit changed in the decoded frames, inside
    the mask (None: everywhere). The VAE's own error on the source (source - decoded_source) is kept out
    of the result: the builtin prior's VAE turns backdrops it never saw into other colours (grey: 14 dB)."""
    change = decoded_edit - decoded_source
    return (source + (change if mask is None else mask * change)).clamp(0, 1)
