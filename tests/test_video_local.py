"""Edits that change only what the prompt changes: exact reconstruction, the local-edit mask, --mask input."""

import pytest
import torch

from gen3d.config import read_yaml, resolve_config_path
from gen3d.diffusion.prior import BUILTIN_PRIOR, load_prior
from gen3d.errors import UserError
from gen3d.profiles import build_with_profile
from gen3d.utils.media import save_image, write_video
from video.attention import reweight_cross_attention
from video.blend import (
    AttentionBlend,
    FixedMask,
    _dilate,
    common_words,
    compose,
    differing_tokens,
    edit_renoise,
    edit_reweight,
    edit_uncond,
    edit_unconds,
    guidance_away,
    make_blend,
    pixel_mask,
)
from video.config import VideoEditConfig
from video.ddim import ddim_edit, ddim_invert, make_eps
from video.demo import moving_shape_and_mask
from video.inflate import inflate
from video.io import read_video
from video.metrics import psnr
from video.region import appearance_split, colour_grow, noise_difference, refine
from video.run import encode_frames, run_video

TINY = [
    "trainer.max_steps=2",
    "trainer.checkpoint_every=2",
    "sampling.steps=3",
    "sampling.inversion_steps=3",
    "frames=3",
]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A grey-backdrop clip (4 frames, 64x64) and its ground-truth masks."""
    frames, masks = moving_shape_and_mask(4, 64, "cube", "red", motion="rise", background="grey")
    path = write_video(tmp_path_factory.mktemp("in") / "cube.mp4", frames.permute(0, 2, 3, 1), fps=5)
    return path, masks


def _cfg(tiny_pipeline, video, tmp_path, edit, *extra):
    layer = {
        "model": str(tiny_pipeline),
        "video": str(video),
        "prompt": "a red cube",
        "edit": edit,
        "output": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
    }
    return build_with_profile(VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), layer, TINY + list(extra))


def _edit_frames(run_dir, i):
    return read_video(run_dir / "frames" / f"edit-{i}", 3, size=64).frames


def test_differing_tokens():
    from gen3d.prior.tokenizer import build_tokenizer

    tok = build_tokenizer()
    assert differing_tokens(tok, "a red cube", "a blue cube") == ([2], [2])
    assert differing_tokens(tok, "a red cube", "a red cube") == ([], [])
    assert differing_tokens(tok, "a red sphere", "a blue cube") == ([2, 3], [2, 3])


def _inverted(tiny_pipeline, steps):
    """(prior, clean latents, source embedding, trajectory, inverted latents): the tiny prior inflated for
    Tune-A-Video, a 3-frame gradient clip, 'a blue sphere' and its DDIM inversion over `steps` steps."""
    p = load_prior(str(tiny_pipeline))
    inflate(p.unet, "sparse_causal", "tuneavideo")
    x0 = encode_frames(p, moving_shape_and_mask(3, 64, background="gradient")[0])
    src, traj = p.encode_text(["a blue sphere"]), []
    return p, x0, src, traj, ddim_invert(make_eps(p, p.unet, src), x0, p, steps, traj)


def test_edit_equal_to_source_is_exact_with_cfg(tiny_pipeline):
    """Exact inversion + negative-prompt inversion: the source caption at guidance 7.5 returns the clean
    latents; without the stored trajectory (plain DDIM, null prompt) it does not."""
    p, x0, src, traj, x_t = _inverted(tiny_pipeline, 4)
    neg = p.encode_text([""])
    assert len(traj) == 5 and torch.equal(traj[0], x0.float()) and torch.equal(traj[-1], x_t)
    exact = ddim_edit(p, p.unet, x_t, src, src, src, 7.5, 4, 1.0, traj, True)
    assert torch.allclose(exact, x0, atol=1e-4)
    plain = ddim_edit(p, p.unet, x_t, src, src, neg, 7.5, 4, 1.0)
    assert float((plain - x0).norm() / x0.norm()) > 0.05


def test_reconstruction_end_to_end(tiny_pipeline, clip, tmp_path):
    """edit == source gives back the input frames, local edit on and off; the colour edit writes its mask."""
    for local in ("true", "false"):
        run_dir = tmp_path / f"run-{local}"
        run_dir.mkdir()
        run_video(
            _cfg(tiny_pipeline, clip[0], tmp_path, ["a blue cube", "a red cube"], f"local.enabled={local}"), run_dir
        )
        source = read_video(clip[0], 3, size=64).frames
        assert psnr(_edit_frames(run_dir, 1), source) > 40
        assert (run_dir / "mask-0.mp4").is_file() == (local == "true")
    old = _cfg(
        tiny_pipeline,
        clip[0],
        tmp_path,
        ["a red cube"],
        "local.enabled=false",
        "sampling.exact_inversion=false",
        "sampling.pixel_residual=false",
        "sampling.negative_prompt_inversion=false",
    )
    (tmp_path / "old").mkdir()
    run_video(old, tmp_path / "old")
    assert psnr(_edit_frames(tmp_path / "old", 0), read_video(clip[0], 3, size=64).frames) < 28


def test_compose_keeps_the_source_outside_the_mask():
    src, dec_src, dec_edit = torch.rand(3, 2, 3, 8, 8).unbind(0)
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., 2:5, 2:5] = 1
    out = compose(src, dec_src, dec_edit, mask)
    assert torch.equal(out[..., 0, 0], src[..., 0, 0])
    assert torch.allclose(out[..., 3, 3], (src + dec_edit - dec_src).clamp(0, 1)[..., 3, 3])
    assert torch.allclose(compose(src, dec_src, dec_src, None), src)


def _iou(a, b):
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.skipif(not (BUILTIN_PRIOR / "model_index.json").is_file(), reason="builtin prior not trained yet")
def test_blend_mask_finds_the_object(tmp_path):
    """The words that differ ("red" -> "blue") select the cube on a grey clip after a short fine-tuning
    (60 steps): the region at the latent grid has IoU > 0.35 with the renderer's mask (measured 0.66 with the
    builtin profile's colour growth, 0.55 without; every latent cell would give 0.14; 0.48 with another seed,
    without) and the pixel mask snapped to the frames' edges IoU > 0.6 (measured 0.85; 0.74 without the
    growth); it lies on the object far more than off it (measured 0.90 of the object's cells, 0.06 of the
    others)."""
    import lightning as L

    from video.run import build_model
    from video.tune import VideoTuner, fine_tune

    L.seed_everything(0, verbose=False)
    layer = {"model": "builtin", "prompt": "a red cube", "edit": ["a blue cube"]}
    steps = [
        "trainer.max_steps=60",
        "trainer.checkpoint_every=1000",
        "trainer.log_every=0",
        "trainer.precision=32-true",
    ]
    cfg = build_with_profile(VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), layer, steps)
    p = load_prior("builtin")
    frames, gt = moving_shape_and_mask(4, 64, "cube", "red", motion="rise", background="grey")
    x0 = encode_frames(p, frames)
    src, edit = p.encode_text(["a red cube"]), p.encode_text(["a blue cube"])
    tuner = VideoTuner(build_model(cfg, p, frames), x0, src, p.scheduler, cfg.trainer.lr)
    fine_tune(tuner, cfg, tmp_path, "cpu", None)
    model = tuner.model.eval()
    blend = make_blend(cfg, p, model, x0, ("a red cube", "a blue cube"), (src, edit), frames=frames)
    assert blend.difference is not None and blend.source_tokens == [2] and blend.edit_tokens == [2]
    traj = []
    x_t = ddim_invert(make_eps(p, model, src), x0, p, 10, traj)
    ddim_edit(p, model, x_t, src, edit, src, 7.5, 10, 1.0, traj, True, blend)  # the attention maps
    gt_cells = torch.nn.functional.adaptive_avg_pool2d(gt.float()[:, None], 16) > 0.3
    region = blend.region() > 0.5
    pixels = pixel_mask(blend, frames) > 0.5
    inside, outside = float(region[gt_cells].float().mean()), float(region[~gt_cells].float().mean())
    print(
        f"region IoU {_iou(region, gt_cells):.3f}, pixels {_iou(pixels, gt[:, None]):.3f}, on {inside:.2f} off {outside:.2f}"
    )
    assert _iou(region, gt_cells) > 0.35 and _iou(pixels, gt[:, None]) > 0.6 and inside > 5 * outside
    # the builtin profile: one cell of colour growth, no dilation for the latent blend
    assert (cfg.local.grow, cfg.local.dilate) == (1, 0) and torch.equal(blend.mask(), blend.region())


def test_equal_prompts_have_an_empty_region(tiny_pipeline):
    """No differing words: no noise difference is computed and the region is empty; the noise difference
    of two equal embeddings is zero, of two different ones it is normalised to a largest value of 1."""
    p = load_prior(str(tiny_pipeline))
    inflate(p.unet, "sparse_causal", "tuneavideo")
    cfg = build_with_profile(VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), {"model": "builtin"}, [])
    x0 = encode_frames(p, moving_shape_and_mask(3, 64, background="gradient")[0])
    a, b = p.encode_text(["a blue sphere"]), p.encode_text(["a red sphere"])
    blend = make_blend(cfg, p, p.unet, x0, ("a blue sphere", "a blue sphere"), (a, a))
    assert blend.difference is None and not blend.mask().any()
    assert not noise_difference(p, p.unet, x0, a, a, (0.5,), 2).any()
    d = noise_difference(p, p.unet, x0, a, b, (0.3, 0.6), 2)
    assert d.shape == (3, 1, 16, 16) and float(d.max()) == pytest.approx(1.0) and float(d.min()) >= 0


def test_refine_snaps_a_coarse_mask_to_the_object():
    """The renderer's mask coarsened to 4-pixel cells (IoU 0.85) and snapped to the frames' edges: IoU
    above 0.9 on every backdrop (measured 0.93-0.99); a 1-cell dilated one (0.52) gets above 0.6 (measured
    0.67 on the texture, 0.84-0.86 on the others)."""
    for background in ("grey", "gradient", "texture", "dark"):
        frames, gt = moving_shape_and_mask(3, 64, "sphere", "blue", motion="slide", background=background)
        cells = (torch.nn.functional.adaptive_avg_pool2d(gt.float()[:, None], 16) > 0.3).float()
        for grow, floor in ((0, 0.9), (1, 0.6)):
            coarse = torch.nn.functional.interpolate(_dilate(cells, grow), size=64) > 0.5
            fine = refine(coarse.float(), frames, 4) > 0.5
            assert _iou(fine, gt[:, None]) > max(floor, _iou(coarse, gt[:, None]) + 0.05), (background, grow)


def test_appearance_split_drops_what_looks_like_the_backdrop():
    """A region that holds the object and a piece of backdrop next to it (what the noise difference lights
    up where the edit prompt would draw something new): with the colours where the region's core lies, the
    piece of backdrop goes (measured: none of it is left on any backdrop) and the object stays (measured
    0.93 of its pixels kept on the texture, 0.97-0.99 on the others); without a core or without an
    outside the mask comes back as it is."""
    for background in ("texture", "gradient", "grey", "dark"):
        frames, gt = moving_shape_and_mask(3, 64, "cone", "yellow", motion="slide", background=background)
        obj = gt[:, None].float()
        yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
        blob = (((yy - 16) ** 2 + (xx - 32) ** 2) < 12**2).float()[None, None].expand_as(obj) * (1 - _dilate(obj, 3))
        core = -_dilate(-obj, 2)  # inside the object, as the cells where the difference peaks
        split = appearance_split(torch.maximum(obj, blob), core, frames, 4) > 0.5
        assert float(split[blob > 0.5].float().mean()) < 0.02, background
        assert float(split[obj > 0.5].float().mean()) > 0.9, background
        assert torch.equal(appearance_split(obj, torch.zeros_like(obj), frames, 4), obj)
        whole = torch.ones_like(obj)
        assert torch.equal(appearance_split(whole, core, frames, 4), whole)


def test_colour_grow_completes_the_object_and_leaves_the_backdrop():
    """A latent region holding only the object's left part (what the noise difference gives where it is
    weak on the object): one cell of colour growth adds the object's cells next to it (measured: the region
    goes from 38 of the object's 66 cells to 53, of the 54 one cell away) and no cell the object does not
    touch (measured: none on any backdrop; 0-2 rim cells it covers less than half of); 0 cells, or a region
    without a core, give the region back as it is."""
    for background in ("texture", "gradient", "grey", "dark"):
        frames, gt = moving_shape_and_mask(3, 64, "cone", "yellow", motion="slide", background=background)
        cover = torch.nn.functional.adaptive_avg_pool2d(gt.float()[:, None], 16)
        cells = (cover > 0.5).float()
        xs = torch.arange(16).float()[None, None, None]
        centre = (cells * xs).flatten(1).sum(1) / cells.flatten(1).sum(1)
        part = cells * (xs < centre[:, None, None, None] + 0.5).float()  # the left half and the middle column
        core = part
        grown = colour_grow(part, core, frames, 1)
        near = _dilate(part, 1)
        assert torch.equal(grown * part, part), background
        assert float((grown * (cover == 0).float()).sum()) == 0, background
        assert float((grown * cells).sum()) >= float((near * cells).sum()) - 2, background
        assert float((grown * cells).sum()) > float(part.sum()) + 3, background
        assert torch.equal(colour_grow(part, core, frames, 0), part)
        assert torch.equal(colour_grow(part, torch.zeros_like(part), frames, 1), part)


def test_attention_blend_keeps_the_colour_grown_cells_in_every_steps_region():
    """AttentionBlend with frames and grow: the cells colour_grow adds to the noise difference's region are
    in region() and mask() (with or without captured attention); without frames, with grow 0 or without a
    difference map (no differing words) nothing is added."""
    frames, gt = moving_shape_and_mask(3, 64, "cone", "yellow", motion="slide", background="texture")
    cells = (torch.nn.functional.adaptive_avg_pool2d(gt.float()[:, None], 16) > 0.5).float()
    xs = torch.arange(16).float()[None, None, None]
    centre = (cells * xs).flatten(1).sum(1) / cells.flatten(1).sum(1)
    diff = cells * (xs < centre[:, None, None, None] + 0.5).float()  # the object's left half lights up
    plain = AttentionBlend([2], [2], 3, 16, difference=diff)
    grown = AttentionBlend([2], [2], 3, 16, difference=diff, frames=frames, grow=1)
    assert torch.equal(plain.region(), diff) and torch.equal(
        AttentionBlend([2], [2], 3, 16, difference=diff, frames=frames).region(), diff
    )
    assert float((grown.region() * cells).sum()) > float(diff.sum()) + 3
    assert torch.equal(grown.region(), colour_grow(diff, diff, frames, 1))
    assert torch.equal(grown.mask(), grown.region())  # dilate 0
    grown.sum, grown.calls = torch.zeros(6, 4, 16, 16), 1  # captured attention naming no place
    assert torch.equal(grown.region(), colour_grow(diff, diff, frames, 1))
    assert AttentionBlend([], [], 3, 16, frames=frames, grow=1).grown is None


# the builtin profiles turn these colour settings on (configs/profiles/builtin/tuneavideo.yaml); off, as in the code
KNOBS_OFF = ("local.common_guidance=false", "local.reweight=1", "local.renoise=0", "local.grow=0", "local.dilate=1")


def _knobs_off(*extra):
    """The builtin Tune-A-Video config with the colour settings off, then `extra` overrides."""
    return build_with_profile(
        VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), {"model": "builtin"}, [*KNOBS_OFF, *extra]
    )


def test_builtin_profiles_turn_the_colour_settings_on():
    """The builtin Tune-A-Video and ControlVideo profiles: re-noising, common guidance, re-weighting and one
    cell of colour growth instead of the blind one-cell dilation (docs/video.md "Bench"); the sd profile (the
    method config as it is) leaves them off."""
    for method in ("tuneavideo", "controlvideo"):
        yaml_cfg = read_yaml(resolve_config_path(method))
        local = build_with_profile(VideoEditConfig, yaml_cfg, {"model": "builtin"}, []).local
        assert (local.renoise, local.common_guidance, local.reweight) == (1.0, True, 5.0), method
        assert (local.grow, local.dilate) == (1, 0), method
        sd = build_with_profile(VideoEditConfig, yaml_cfg, {"model": "builtin", "profile": "sd"}, []).local
        assert (sd.renoise, sd.common_guidance, sd.reweight, sd.grow, sd.dilate) == (0.0, False, 1.0, 0, 1), method


def test_edit_uncond_is_plain_while_the_region_of_the_words_keeps_the_background():
    """CFG's unconditional prompt: with local.plain_guidance and the region of the differing words, the
    negative prompt; the source caption (negative-prompt inversion) by default, without a region and with a
    user's mask; the negative prompt without negative-prompt inversion."""
    src, neg = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    region, user = AttentionBlend([2], [2], 3, 16), FixedMask(torch.ones(3, 1, 64, 64), 16)

    plain = _knobs_off("local.plain_guidance=true")
    assert edit_uncond(plain, region, src, neg) is neg and edit_uncond(_knobs_off(), region, src, neg) is src
    assert edit_uncond(plain, None, src, neg) is src and edit_uncond(plain, user, src, neg) is src
    assert edit_uncond(_knobs_off("sampling.negative_prompt_inversion=false"), None, src, neg) is neg


def test_plain_steps_and_reweight_options():
    """local.plain_steps < 1: negative-prompt inversion after the first steps; local.reweight: the edit's
    differing tokens, only for the region of the differing words."""
    src, neg = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    region, user = AttentionBlend([2], [2, 3], 3, 16), FixedMask(torch.ones(3, 1, 64, 64), 16)

    early = _knobs_off("local.plain_guidance=true", "local.plain_steps=0.3")
    uncond, first, frac = edit_unconds(early, region, src, neg)
    assert uncond is src and first is neg and frac == 0.3
    assert edit_unconds(early, user, src, neg) == (src, None, 0.0)
    assert edit_unconds(_knobs_off("local.plain_guidance=true"), region, src, neg) == (neg, None, 0.0)
    assert edit_unconds(_knobs_off(), region, src, neg) == (src, None, 0.0)
    assert edit_unconds(_knobs_off("local.common_guidance=true"), region, src, neg) == (neg, None, 0.0)
    assert edit_unconds(_knobs_off("local.common_guidance=true"), None, src, neg) == (src, None, 0.0)
    assert common_words("a green cylinder", "a purple cylinder") == "a cylinder"
    common = lambda: torch.full((1, 2, 3), 2.0)  # noqa: E731
    assert guidance_away(_knobs_off(), region, neg, src, common) is neg
    assert guidance_away(_knobs_off("local.common_guidance=true"), user, neg, src, common) is neg
    half = _knobs_off("local.common_guidance=true", "local.common_mix=0.25")
    assert torch.allclose(guidance_away(half, region, neg, src, common), torch.full((1, 2, 3), 1.5))
    assert common_words("a red sphere", "a red sphere") == "a red sphere"
    assert edit_reweight(_knobs_off(), region) is None and edit_reweight(_knobs_off("local.reweight=3"), user) is None
    assert edit_reweight(_knobs_off("local.reweight=3"), region) == ([2, 3], 3.0)
    with pytest.raises(UserError, match="local.plain_steps"):
        _knobs_off("local.plain_steps=1.5")
    with pytest.raises(UserError, match="local.grow"):
        _knobs_off("local.grow=-1")


def test_reweight_cross_attention_scales_only_the_given_rows_tokens_and_region(tiny_pipeline):
    """Scale 1 reproduces diffusers' processor; a scale changes only the given rows, and only at the queries
    inside the mask; ddim_edit with early_steps 1 equals sampling with early_uncond throughout."""
    p = load_prior(str(tiny_pipeline))
    inflate(p.unet, "sparse_causal", "tuneavideo")
    name, attn = next((n, m) for n, m in p.unet.named_modules() if n.endswith("attn2"))
    torch.manual_seed(0)
    h, ctx = torch.randn(6, 64, attn.to_q.in_features), p.encode_text(["a red cube"]).expand(6, -1, -1)
    plain = attn(h, ctx)
    with torch.no_grad(), reweight_cross_attention(p.unet, slice(3, 6), [2], 1.0):
        assert torch.allclose(attn(h, ctx), plain, atol=1e-5)
    mask = torch.zeros(3, 1, 16, 16)
    mask[:, :, :8] = 1  # the upper half of the frame
    with torch.no_grad(), reweight_cross_attention(p.unet, slice(3, 6), [2], 4.0, mask):
        out = attn(h, ctx)
    changed = (out - plain).abs().amax(-1) > 1e-4  # [6, 64]
    assert not changed[:3].any() and changed[3:, :32].all() and not changed[3:, 32:].any()
    x0 = encode_frames(p, moving_shape_and_mask(3, 64, background="gradient")[0])
    src, edit, neg = (p.encode_text([t]) for t in ("a red cube", "a blue cube", ""))
    x_t = torch.randn_like(x0)
    whole = ddim_edit(p, p.unet, x_t, src, edit, neg, 7.5, 3, 0.0, early_uncond=neg, early_steps=0.0)
    first = ddim_edit(p, p.unet, x_t, src, edit, src, 7.5, 3, 0.0, early_uncond=neg, early_steps=1.0)
    assert torch.allclose(whole, first, atol=1e-5)
    weighted, same = (ddim_edit(p, p.unet, x_t, src, edit, src, 7.5, 3, 0.0, reweight=([2], c)) for c in (4.0, 1.0))
    assert float((weighted - same).abs().max()) > 1e-3


def test_local_settings_out_of_range():
    for key in ("local.difference_threshold=1.5", "local.draws=0", "local.strengths=[0.5,1.0]"):
        with pytest.raises(UserError, match=f"config key '{key.split('=')[0]}' must be"):
            build_with_profile(
                VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), {"model": "builtin"}, [key]
            )


def test_mask_input_errors(tiny_pipeline, clip, tmp_path, capsys):
    """--mask: a missing file, a wrong frame count, a wrong size are one `error:` line each, exit code 2,
    nothing written; a good mask video and a folder are accepted and the mask used is written."""
    from launch import main

    video, gt = clip
    good = write_video(tmp_path / "m.mp4", gt.float()[..., None].expand(-1, -1, -1, 3), fps=5)
    short = write_video(tmp_path / "short.mp4", gt[:2].float()[..., None].expand(-1, -1, -1, 3), fps=5)
    small = write_video(tmp_path / "small.mp4", gt.float()[:, ::2, ::2, None].expand(-1, -1, -1, 3), fps=5)
    for path, msg in [
        (tmp_path / "nope.mp4", "does not exist"),
        (short, "has 2 frames"),
        (small, "frames are 32x32, the video's are 64x64"),
    ]:
        out = tmp_path / "out"
        args = ["--config", "tuneavideo.yaml", "--model", str(tiny_pipeline), "--video", str(video)]
        args += ["--prompt", "a red cube", "--edit", "a blue cube", "--mask", str(path), "--output", str(out)]
        assert main(args + TINY) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err, err
        assert not out.exists()
    folder = tmp_path / "mask-folder"
    for i, m in enumerate(gt[:3]):
        save_image(folder / f"{i:04d}.png", m.float()[..., None].expand(-1, -1, 3))
    for path in (good, folder):
        run_dir = tmp_path / f"ok-{path.stem}"
        run_dir.mkdir()
        run_video(_cfg(tiny_pipeline, video, tmp_path, ["a blue cube"], f"mask={path}"), run_dir)
        used = read_video(run_dir / "mask-0.mp4", 3, size=64).frames[:, 0] > 0.5
        assert _iou(used, gt[:3]) > 0.9  # the given region, as given


def test_renoise_starts_the_region_from_fresh_noise(tiny_pipeline):
    """local.renoise: inside the region the edit starts from fresh noise (the result changes there and only
    there, deterministically per seed); an edit equal to the source has an empty region and stays exact; a
    user's mask keeps the inverted latents; out of range is an error."""
    p, x0, src, traj, x_t = _inverted(tiny_pipeline, 3)
    edit = p.encode_text(["a red sphere"])
    difference = torch.zeros(3, 1, 16, 16)
    difference[..., 4:9, 4:9] = 1.0
    region = AttentionBlend([2], [2], 3, 16, dilate=1, difference=difference)

    def sample(blend, cond, r, seed=0):
        return ddim_edit(p, p.unet, x_t, src, cond, src, 7.5, 3, 0.0, traj, True, blend, renoise=r, renoise_seed=seed)

    kept, fresh = sample(region, edit, 0.0), sample(region, edit, 1.0)
    inside = region.mask().expand_as(kept) > 0.5
    assert float((fresh - kept)[inside].abs().max()) > 1e-2 and torch.equal(fresh[~inside], kept[~inside])
    assert torch.equal(sample(region, edit, 1.0), fresh) and not torch.equal(sample(region, edit, 1.0, 1), fresh)
    cfg = _knobs_off()
    empty = make_blend(cfg, p, p.unet, x0, ("a blue sphere", "a blue sphere"), (src, src))
    assert torch.allclose(sample(empty, src, 1.0), x0, atol=1e-4)
    on = _knobs_off("local.renoise=0.6")
    assert edit_renoise(on, region) == 0.6 and edit_renoise(cfg, region) == 0.0
    assert edit_renoise(on, FixedMask(torch.ones(3, 1, 64, 64), 16)) == 0.0 and edit_renoise(on, None) == 0.0
    with pytest.raises(UserError, match="config key 'local.renoise' must be"):
        build_with_profile(
            VideoEditConfig, read_yaml(resolve_config_path("tuneavideo")), {"model": "builtin"}, ["local.renoise=1.5"]
        )
