"""Inflation of a 2D UNet into a video UNet: equivalence with the 2D model, attention patterns."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from gen3d.errors import UserError
from video.attention import FrameAttnProcessor, frame_sources
from video.inflate import inflate, select_trainable

F_ = 5


@pytest.fixture(scope="module")
def unet2d(tiny_pipeline):
    torch.manual_seed(0)
    return UNet2DConditionModel.from_pretrained(tiny_pipeline, subfolder="unet").eval()


def _inputs(unet, n=F_, same=False):
    g = torch.Generator().manual_seed(1)
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn(1 if same else n, c, s, s, generator=g).expand(n, -1, -1, -1).clone()
    emb = torch.randn(1, 16, unet.config.cross_attention_dim, generator=g).expand(n, -1, -1)
    return x, torch.full((n,), 400), emb


def _run(model, x, t, emb, video=True):
    with torch.no_grad():
        kw = {"cross_attention_kwargs": {"n_frames": x.shape[0]}} if video else {}
        return model(x, t, emb, **kw).sample


@pytest.mark.parametrize("temporal", ["tuneavideo", "controlvideo"])
def test_inflated_unet_equals_2d_per_frame(unet2d, temporal):
    x, t, emb = _inputs(unet2d)
    ref = _run(unet2d, x, t, emb, video=False)
    # per-frame self-attention + fresh temporal modules: exactly the 2D model for any frames
    out = _run(inflate(copy.deepcopy(unet2d), "self", temporal), x, t, emb)
    assert torch.allclose(out, ref, atol=1e-5)
    # the papers' cross-frame attention: the first frame (and the key frame) equals the 2D model
    for spatial in ("sparse_causal", "key_frame"):
        out = _run(inflate(copy.deepcopy(unet2d), spatial, temporal), x, t, emb)
        assert torch.allclose(out[0], ref[0], atol=1e-5)
        assert not torch.allclose(out[1:], ref[1:], atol=1e-3)  # other frames see frame 0
    # a still video (identical frames): every frame equals the 2D model's output
    xs, _, _ = _inputs(unet2d, same=True)
    ref_s = _run(unet2d, xs, t, emb, video=False)
    for spatial in ("sparse_causal", "key_frame"):
        out = _run(inflate(copy.deepcopy(unet2d), spatial, temporal), xs, t, emb)
        assert torch.allclose(out, ref_s, atol=1e-5)


def test_frame_sources():
    assert frame_sources("sparse_causal", 4) == [[0, 0], [0, 0], [0, 1], [0, 2]]
    assert frame_sources("key_frame", 3, key_frame=1) == [[1], [1], [1]]
    with pytest.raises(ValueError):
        frame_sources("bogus", 3)


def _changed_frames(fn, x, frame, n):
    """Frames whose output changes when input frame `frame` changes."""
    y0 = fn(x)
    x2 = x.clone()
    x2[frame] += torch.randn_like(x2[frame])
    y1 = fn(x2).reshape(n, -1)
    return [i for i in range(n) if not torch.allclose(y0.reshape(n, -1)[i], y1[i], atol=1e-6)]


def test_processor_attention_patterns():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8)
    n, tokens = 6, 10
    x = torch.randn(n, tokens, 32)
    for mode, frame, expected in [
        ("sparse_causal", 2, [2, 3]),  # frame 3 sees frame 2 as its previous
        ("sparse_causal", 0, list(range(n))),  # everyone sees frame 0
        ("key_frame", 3, [3]),  # only the key frame is seen by others
        ("key_frame", 0, list(range(n))),
        ("self", 4, [4]),
    ]:
        attn.set_processor(FrameAttnProcessor(mode))
        fn = lambda h: attn(h, n_frames=n)  # noqa: E731
        with torch.no_grad():
            assert _changed_frames(fn, x, frame, n) == expected, (mode, frame)


def test_unet_masks_causal_and_key_frame(unet2d):
    x, t, emb = _inputs(unet2d, n=4)
    causal = inflate(copy.deepcopy(unet2d), "sparse_causal", "none")
    # sparse-causal: a frame never sees later frames (through any number of layers)
    assert _changed_frames(lambda h: _run(causal, h, t, emb), x, 2, 4) == [2, 3]
    key = inflate(copy.deepcopy(unet2d), "key_frame", "none")
    assert _changed_frames(lambda h: _run(key, h, t, emb), x, 1, 4) == [1]
    # temporal attention (once trained, i.e. non-zero) mixes all frames
    mixed = inflate(copy.deepcopy(unet2d), "sparse_causal", "tuneavideo")
    for name, p in mixed.named_parameters():
        if "temporal" in name and "to_out" in name:
            torch.nn.init.normal_(p, std=0.1)
    assert _changed_frames(lambda h: _run(mixed, h, t, emb), x, 3, 4) == [0, 1, 2, 3]


def test_select_trainable(unet2d):
    unet = inflate(copy.deepcopy(unet2d), "sparse_causal", "tuneavideo")
    names = select_trainable(unet, ["attn1.to_q", "attn2.to_q", "temporal"])
    assert names and all(("attn1.to_q" in n or "attn2.to_q" in n or "temporal" in n) for n in names)
    assert not any("attn1.temporal" not in n and ".to_k" in n for n in names)
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert trainable == set(names)
    assert any("attn1.temporal.attn.to_k" in n for n in names)  # all of the temporal module
    with pytest.raises(UserError, match="matches no UNet parameter"):
        select_trainable(unet, ["attn9"])


@pytest.mark.parametrize("mode", ["sparse_causal", "key_frame"])
def test_source_group_reuses_the_first_videos_attention_weights(mode):
    """Three videos of n frames in one batch, source_group=2: video 0 and video 2 attend as usual, video 1
    gets softmax(q_0 k_0^T / sqrt(d)) v_1 (by hand, over the frames each frame attends to)."""
    from einops import rearrange

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    attn.set_processor(FrameAttnProcessor(mode))
    n, tokens = 3, 5
    x = torch.randn(3 * n, tokens, 16)
    with torch.no_grad():
        plain = attn(x, n_frames=n)
        shared = attn(x, n_frames=n, source_group=2)
        assert torch.allclose(shared[:n], plain[:n], atol=1e-6)
        assert torch.allclose(shared[2 * n :], plain[2 * n :], atol=1e-6)
        assert torch.allclose(attn(x[:n], n_frames=n, source_group=2), plain[:n], atol=1e-6)  # one video: as usual
        heads = lambda t: rearrange(t, "n (h d) -> h n d", h=2)  # noqa: E731
        for i, sources in enumerate(frame_sources(mode, n)):
            q = heads(attn.to_q(x[i]))
            k = heads(attn.to_k(torch.cat([x[j] for j in sources])))
            v1 = heads(attn.to_v(torch.cat([x[n + j] for j in sources])))
            w = torch.softmax(q @ k.transpose(1, 2) / 8**0.5, dim=-1)
            ref = attn.to_out[0](rearrange(w @ v1, "h n d -> n (h d)"))
            assert torch.allclose(shared[n + i], ref, atol=1e-5), (mode, i)
        assert not torch.allclose(shared[n : 2 * n], plain[n : 2 * n], atol=1e-3)
