"""Frame-aware attention on diffusers' attention-processor API (frames folded into the batch).

Video latents travel through the UNet as [B*F, C, h, w]; every attention call receives
`n_frames=F` through `cross_attention_kwargs`. `FrameAttnProcessor` replaces the processor of
each transformer block's self-attention (attn1):

- "sparse_causal" (Tune-A-Video): frame i attends to the tokens of frame 0 and frame i-1
  (frame 0 to itself);
- "key_frame" (ControlVideo): every frame attends to the tokens of the key frame;
- "self": each frame attends to itself (a plain 2D UNet per frame).

When the Attention module carries a `temporal` submodule (see `TemporalAttention`), the
processor runs it right after the spatial attention: out = s + temporal(h + s), where h is the
block's normalised input and s the spatial attention's output. Temporal modules start with a
zero output projection, so a freshly inflated UNet equals the 2D UNet frame by frame.
Cross-attention (attn2) keeps diffusers' own processor behaviour via `PassThroughProcessor`.

Source attention (`source_group=k` in `cross_attention_kwargs`, used by `video.ddim.ddim_edit`):
the batch holds B videos [(b f), N, D] whose first is a source branch; videos 1..k-1 then use the
source's spatial attention weights softmax(q_src k_src^T) with their own values, so they keep the
source's layout while their values (colour, texture) follow their own prompts; videos k..B-1 (the
unconditional half of classifier-free guidance) attend as usual. This is Prompt-to-Prompt's
self-attention injection (into the conditional branch only), on the frame-aware self-attention.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange

SPATIAL_MODES = ("sparse_causal", "key_frame", "self")


def frame_sources(mode: str, n_frames: int, key_frame: int = 0) -> list[list[int]]:
    """For each frame, the frames whose tokens it attends to (the attention pattern, as indices)."""
    if mode == "sparse_causal":
        return [[0, max(i - 1, 0)] for i in range(n_frames)]
    if mode == "key_frame":
        return [[min(key_frame, n_frames - 1)] for _ in range(n_frames)]
    if mode == "self":
        return [[i] for i in range(n_frames)]
    raise ValueError(f"unknown spatial attention mode {mode!r} (one of {', '.join(SPATIAL_MODES)})")


class PassThroughProcessor(AttnProcessor2_0):
    """diffusers' scaled-dot-product processor that accepts (and ignores) `n_frames`.

    While `store` is set (`capture_cross_attention`), a cross-attention call also hands its attention
    probabilities softmax(q k^T / sqrt(d)), averaged over heads ([B*F, N, L]), to `store(probs)`."""

    store = None
    reweight = None  # (rows, tokens, scale, mask [F,1,h,w] or None) while `reweight_cross_attention` runs

    def __call__(
        self,
        attn: Attention,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        n_frames: int | None = None,
        source_group: int = 0,
    ):
        if (self.store is None and self.reweight is None) or encoder_hidden_states is None or hidden_states.ndim != 3:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        ctx = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        q = rearrange(attn.to_q(hidden_states), "b n (h d) -> b h n d", h=attn.heads)
        k = rearrange(attn.to_k(ctx), "b l (h d) -> b h l d", h=attn.heads)
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
        if self.store is not None:
            self.store(probs.mean(1).float())
        plain = attn.group_norm is not None or attn.spatial_norm is not None or attention_mask is not None
        if self.reweight is None or plain:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        probs = probs * _token_weights(self.reweight, probs.shape, probs.device).to(probs.dtype)
        out = rearrange(probs @ rearrange(attn.to_v(ctx), "b l (h d) -> b h l d", h=attn.heads), "b h n d -> b n (h d)")
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _token_weights(reweight, shape, device) -> torch.Tensor:
    """[B, 1, N, L] factors of the attention probabilities: `scale` at the rows' queries inside the mask
    (resized to this layer's N = side^2 tokens; None: every query) and the given tokens, 1 elsewhere."""
    rows, tokens, scale, mask = reweight
    b, _, n, length = shape
    side = int(round(math.sqrt(n)))
    w = torch.ones(b, 1, n, length, device=device)
    inside = torch.ones(rows.stop - rows.start, n, device=device)
    if mask is not None:
        inside = F.interpolate(mask.float().to(device), size=(side, side), mode="nearest").flatten(1)
    col = torch.zeros(length, device=device)
    col[[t for t in tokens if t < length]] = 1.0
    w[rows, 0] = 1 + (scale - 1) * inside[:, :, None] * col
    return w


@contextlib.contextmanager
def reweight_cross_attention(model: nn.Module, rows: slice, tokens: list[int], scale: float, mask=None):
    """Prompt-to-Prompt's attention re-weighting: within the block, every cross-attention (attn2) of
    `model` multiplies the attention probabilities of `tokens` by `scale` for the batch rows `rows` (the
    frames of one video), at the queries inside mask [F,1,h,w] (None: all), without renormalising. Yields
    `set_mask(mask)`, which moves the region for the next UNet call (the modules are found once)."""
    procs = [
        m.processor
        for name, m in model.named_modules()
        if name.endswith("attn2") and isinstance(getattr(m, "processor", None), PassThroughProcessor)
    ]

    def set_mask(region) -> None:
        for p in procs:
            p.reweight = (rows, list(tokens), float(scale), region)

    set_mask(mask)
    try:
        yield set_mask
    finally:
        for p in procs:
            p.reweight = None


@contextlib.contextmanager
def capture_cross_attention(model: nn.Module, store, within: str = ""):
    """Within the block, every cross-attention (attn2) of `model` whose name contains `within` calls
    store(probs [B*F, N, L])."""
    procs = [
        m.processor
        for name, m in model.named_modules()
        if name.endswith("attn2") and within in name and isinstance(getattr(m, "processor", None), PassThroughProcessor)
    ]
    for p in procs:
        p.store = store
    try:
        yield
    finally:
        for p in procs:
            p.store = None


class FrameAttnProcessor:
    """Self-attention across frames (see module docstring); hidden_states [B*F, N, D]."""

    def __init__(self, mode: str = "sparse_causal", key_frame: int = 0):
        frame_sources(mode, 1)  # validates mode
        self.mode, self.key_frame = mode, key_frame

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        n_frames: int | None = None,
        source_group: int = 0,
    ) -> torch.Tensor:
        f = n_frames or 1
        if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
            out = AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        else:
            out = self.spatial(attn, hidden_states, f, source_group)
        temporal = getattr(attn, "temporal", None)
        if temporal is not None:
            out = out + temporal(hidden_states + out, f)
        return out

    def spatial(self, attn: Attention, x: torch.Tensor, f: int, source_group: int = 0) -> torch.Tensor:
        """x [B*F, N, D] -> [B*F, N, D]: queries of each frame, keys/values of its source frames.

        source_group k >= 2: videos 1..k-1 take the attention weights of video 0 (module docstring)."""
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        if self.mode != "self" and f > 1:
            src = torch.tensor(frame_sources(self.mode, f, self.key_frame), device=x.device)  # [F, S]
            k = rearrange(k, "(b f) n d -> b f n d", f=f)[:, src]  # [B, F, S, N, D]
            v = rearrange(v, "(b f) n d -> b f n d", f=f)[:, src]
            k = rearrange(k, "b f s n d -> (b f) (s n) d")
            v = rearrange(v, "b f s n d -> (b f) (s n) d")
        h = attn.heads
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=h) for t in (q, k, v))
        g = min(source_group, x.shape[0] // f) * f  # frames of the videos that share video 0's weights
        if g > f:
            # softmax(q_0 k_0^T) applied to the values of videos 0..k-1 at once (stacked on the last axis)
            vv = rearrange(v[:g], "(b f) h s d -> f h s (b d)", f=f)
            shared = rearrange(
                F.scaled_dot_product_attention(q[:f], k[:f], vv), "f h n (b d) -> (b f) h n d", f=f, b=g // f
            )
            rest = F.scaled_dot_product_attention(q[g:], k[g:], v[g:]) if g < x.shape[0] else shared[:0]
            out = torch.cat([shared, rest])
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b h n d -> b n (h d)").to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


class TemporalAttention(nn.Module):
    """Attention along the frame axis at every spatial position: x [B*F, N, D] -> [B*F, N, D].

    kind "tuneavideo": LayerNorm + a new Attention whose output projection is zero.
    kind "controlvideo": LayerNorm + a copy of the block's spatial self-attention, followed by a
    zero-initialised 1x1 projection (a Linear on channels).
    """

    def __init__(self, spatial: Attention, kind: str = "tuneavideo"):
        super().__init__()
        dim = spatial.to_q.in_features
        self.norm = nn.LayerNorm(dim)
        if kind == "tuneavideo":
            self.attn = Attention(
                query_dim=dim,
                heads=spatial.heads,
                dim_head=spatial.to_q.out_features // spatial.heads,
                bias=spatial.to_q.bias is not None,
            )
            self.proj = None
            nn.init.zeros_(self.attn.to_out[0].weight)
            nn.init.zeros_(self.attn.to_out[0].bias)
        elif kind == "controlvideo":
            self.attn = copy.deepcopy(spatial)
            self.attn.set_processor(AttnProcessor2_0())
            self.proj = nn.Linear(dim, dim)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        else:
            raise ValueError(f"unknown temporal module kind {kind!r} (tuneavideo | controlvideo)")
        self.to(spatial.to_q.weight.dtype)

    def forward(self, x: torch.Tensor, n_frames: int) -> torch.Tensor:
        n = x.shape[1]
        y = rearrange(x, "(b f) n d -> (b n) f d", f=n_frames)
        y = self.attn(self.norm(y))
        if self.proj is not None:
            y = self.proj(y)
        return rearrange(y, "(b n) f d -> (b f) n d", n=n)
