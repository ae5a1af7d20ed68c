"""Edit metrics (video/metrics.py): CLIP text alignment with a tiny random-weight CLIP model built on the fly,
frame consistency, and the silhouette / shape agreement of an edit with its source."""

import math

import pytest
import torch

from video.config import MetricsConfig
from video.metrics import Judge, frame_consistency, silhouette_masks, source_agreement
from video.run import _print_metrics

MATCH, OTHER = "a red sphere is moving", "a green torus"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A CLIPModel (random weights, seed 0) + CLIPProcessor folder; the tokenizer is the builtin prior's."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from gen3d.diffusion.prior import BUILTIN_PRIOR

    tok = AutoTokenizer.from_pretrained(BUILTIN_PRIOR / "tokenizer")
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=tok.model_max_length,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(cfg).save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


@pytest.fixture
def frames():
    return torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _text_features(judge, prompt):
    model, proc = judge.clip
    tokens = proc(text=[prompt], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return (out if torch.is_tensor(out) else out.pooler_output)[0]


def test_clip_text_alignment_prefers_the_matching_prompt(tiny_clip, frames):
    """The visual projection is solved so that every frame's CLIP image feature equals the text feature of
    MATCH: its alignment must be 1, OTHER's must be exactly cos(text(MATCH), text(OTHER)) < 1."""
    judge = Judge(MetricsConfig(clip_model=str(tiny_clip)).clip_model, "no-classifier", prior=None)
    assert judge.clip is not None and judge.classifier is None
    model = judge.clip[0]
    pooled = []  # the vision tower's pooled output of each frame, as Judge.embed preprocesses them
    hook = model.visual_projection.register_forward_hook(lambda m, args, out: pooled.append(args[0].detach()))
    raw = judge.report(frames, MATCH)  # random weights: only the range can be checked
    hook.remove()
    assert raw["frame_consistency"]["embedding"] == "clip"
    assert math.isfinite(raw["text_alignment_clip"]) and -1 <= raw["text_alignment_clip"] <= 1

    p = pooled[0].double()  # [F, hidden]; F < hidden, so P W^T = T has an exact solution
    t_match, t_other = _text_features(judge, MATCH), _text_features(judge, OTHER)
    target = t_match.double().expand(len(p), -1)
    w = torch.linalg.pinv(p) @ target  # [hidden, proj]
    with torch.no_grad():
        model.visual_projection.weight.copy_(w.T.float())

    match, other = judge.report(frames, MATCH), judge.report(frames, OTHER)
    expected_other = float(torch.nn.functional.cosine_similarity(t_match, t_other, dim=0))
    assert abs(expected_other) < 0.999  # the two prompts really differ
    assert match["text_alignment_clip"] == pytest.approx(1.0, abs=1e-4)
    assert other["text_alignment_clip"] == pytest.approx(expected_other, abs=1e-4)
    assert match["text_alignment_clip"] > other["text_alignment_clip"]
    fc = match["frame_consistency"]  # every frame now has the same CLIP feature
    assert fc["consecutive"] == pytest.approx(1.0, abs=1e-4) and fc["all_pairs"] == pytest.approx(1.0, abs=1e-4)


def test_clip_alignment_by_hand_long_prompt_and_printout(tiny_clip, frames, capsys):
    """Against the cosine similarity computed from the model's own features; a prompt longer than the
    text model's positions is truncated instead of failing; the value is printed."""
    judge = Judge(str(tiny_clip), "no-classifier", prior=None)
    model, proc = judge.clip
    inputs = proc(images=list(frames.permute(0, 2, 3, 1).numpy()), return_tensors="pt", do_rescale=False)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=inputs["pixel_values"])
    img = img if torch.is_tensor(img) else img.pooler_output
    txt = _text_features(judge, OTHER)
    by_hand = sum(float(torch.dot(i, txt) / (i.norm() * txt.norm())) for i in img) / len(img)
    assert judge.text_alignment(frames, OTHER) == pytest.approx(by_hand, abs=1e-5)

    long_prompt = " ".join(["a red sphere"] * 12)  # > 16 tokens, the builtin tokenizer's model_max_length
    report = judge.report(frames, long_prompt)
    assert -1 <= report["text_alignment_clip"] <= 1
    _print_metrics({"source": report, "edits": []})
    assert "text-alignment(CLIP)=" in capsys.readouterr().out


def test_without_clip_text_alignment_is_skipped_and_said(tmp_path, frames, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # no cached CLIP
    judge = Judge(None, "extern/builtin-classifier", prior=None)
    assert judge.clip is None and judge.judges()["clip"] is None
    assert any("no CLIP model available locally" in n for n in judge.judges()["notes"])
    report = judge.report(frames, MATCH)
    assert "text_alignment_clip" not in report
    assert report["frame_consistency"]["embedding"] == "classifier-features"
    _print_metrics({"judges": judge.judges(), "source": report, "edits": []})
    assert "metrics: no CLIP model available locally: text alignment is not measured" in capsys.readouterr().out


def test_named_clip_model_that_is_missing_is_an_error(tmp_path):
    from gen3d.errors import UserError

    with pytest.raises(UserError, match="metrics.clip_model .* not found"):
        Judge(str(tmp_path / "missing-clip"), None, prior=None)


def test_frame_consistency_values():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    fc = frame_consistency(e)
    assert fc["consecutive"] == pytest.approx(0.0) and fc["all_pairs"] == pytest.approx(1 / 3)


def test_source_agreement_silhouette_and_shapes():
    """A disc on grey vs. the same disc recoloured (IoU 1) and vs. a disc shifted by its radius."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = lambda cx: (xx - cx) ** 2 + (yy - 16) ** 2 < 36  # noqa: E731  radius 6

    def paint(mask, rgb):
        img = torch.full((3, 32, 32), 0.92)
        img[:, mask] = torch.tensor(rgb)[:, None]
        return img

    src = torch.stack([paint(disc(12), [0.1, 0.1, 0.9]), paint(disc(12), [0.1, 0.1, 0.9])])
    ed = torch.stack([paint(disc(12), [0.9, 0.1, 0.1]), paint(disc(18), [0.9, 0.1, 0.1])])
    assert torch.equal(silhouette_masks(src)[0], disc(12))
    out = source_agreement(src, ed, ["sphere", "cube"], ["sphere", "cone"])
    a, b = disc(12), disc(18)
    shifted = float((a & b).sum() / (a | b).sum())
    assert out["silhouette_iou_per_frame"] == [1.0, pytest.approx(shifted, abs=1e-4)]
    assert out["silhouette_iou"] == pytest.approx((1 + shifted) / 2, abs=1e-4)
    assert out["shape_agreement"] == 0.5
