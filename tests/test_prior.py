"""Tests of the builtin prior: pipeline folder, tokenizer, data, a short training run, classifier."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from gen3d.diffusion.views import VIEWS, view_index
from gen3d.prior.data import CaptionedImages, PriorDataConfig, make_caption, render_dataset
from gen3d.prior.evaluate import ShapeColourClassifier, classifier_accuracy, classify, load_classifier
from gen3d.prior.latents import encode_dataset
from gen3d.prior.losses import diffusion_loss, vae_loss
from gen3d.prior.model import PriorArchConfig, build_components, build_random_pipeline
from gen3d.prior.tokenizer import COLOURS, SHAPES, build_tokenizer, caption_words, check_prompt, vocabulary
from gen3d.prior.train import PriorTrainConfig, main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "extern" / "builtin-prior"
SHIPPED_CLASSIFIER = ROOT / "extern" / "builtin-classifier"


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _check_pipeline_folder(path: Path):
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir(), sub
    assert list((path / "unet").glob("*.safetensors")) and not list(path.rglob("*.bin"))
    assert _folder_mb(path) <= 30
    pipe = StableDiffusionPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    assert pipe.unet.config.sample_size <= 32 and pipe.vae_scale_factor in (2, 4)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    out = pipe(
        "a red cube, front view", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)
    )
    assert out.images.shape == (1, 3, 64, 64)
    assert torch.isfinite(out.images).all()
    return pipe


def test_random_pipeline_loads_and_samples(tmp_path):
    path = build_random_pipeline(tmp_path / "prior", seed=0)
    _check_pipeline_folder(path)
    idx = json.loads((path / "model_index.json").read_text())
    assert idx["safety_checker"] == [None, None]


@pytest.mark.skipif(not (SHIPPED / "model_index.json").exists(), reason="trained prior not shipped yet")
def test_shipped_prior_loads():
    pipe = _check_pipeline_folder(SHIPPED)
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latents' std after VAE training


def test_tokenizer_one_token_per_word(tmp_path):
    tok = build_tokenizer()
    for piece in vocabulary():
        ids = tok(piece, add_special_tokens=False).input_ids
        assert len(ids) == 1, piece
        assert tok.convert_ids_to_tokens(ids)[0] == piece + "</w>"
    assert len({tok(p, add_special_tokens=False).input_ids[0] for p in vocabulary()}) == len(vocabulary())
    tok.save_pretrained(str(tmp_path))
    tok2 = type(tok).from_pretrained(str(tmp_path))
    longest = "a DSLR photo of a purple cylinder, overhead view"
    assert tok2(longest).input_ids == tok(longest).input_ids
    assert len(tok(longest).input_ids) == 12 <= tok.model_max_length
    assert len(tok("a 3D render of a yellow torus, front view").input_ids) <= tok.model_max_length


def test_check_prompt():
    tok = build_tokenizer()
    for ok in ("a DSLR photo of a Red cube, side view", "a 3D render of a torus", "a photo of a blue cone"):
        check_prompt(tok, ok)
        check_prompt(None, ok)
    with pytest.raises(ValueError, match="unknown word 'pineapple'; the builtin prior knows: 3d, a, back"):
        check_prompt(tok, "a DSLR photo of a pineapple")
    with pytest.raises(ValueError, match="'d'"):
        check_prompt(tok, "a d cube")
    assert "pineapple" not in caption_words()


def test_data_deterministic_and_labelled():
    cfg = PriorDataConfig(n_images=24, seed=3, supersample=1)
    a, b = render_dataset(cfg, use_cache=False), render_dataset(cfg, use_cache=False)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = render_dataset(PriorDataConfig(n_images=24, seed=4, supersample=1), use_cache=False)
    assert not np.array_equal(a["images"], c["images"])
    assert a["images"].shape == (24, 64, 64, 3) and a["images"].dtype == np.uint8
    # the object's colour: mean of pixels differing from the background (corner) pixel
    for img, col in zip(a["images"].astype(float), a["colour"]):
        mask = np.abs(img - img[0, 0]).sum(-1) > 30
        assert mask.sum() > 50  # the object fills a fair part of the frame
        rgb = img[mask].mean(0)
        name = COLOURS[col]
        if name in ("red", "green", "blue"):
            assert rgb.argmax() == "rgb".index(name[0]), (name, rgb)
    # captions name the labels; the view suffix agrees with views.py
    ds = CaptionedImages(a, cfg, seed=0)
    rng = random.Random(0)
    for i in range(len(ds)):
        cap = ds.caption(i, rng)
        assert f"a {COLOURS[a['colour'][i]]} {SHAPES[a['shape'][i]]}" in cap
        check_prompt(None, cap)
        if cap.endswith(" view"):
            view = VIEWS[int(view_index(torch.tensor([a["elevation"][i]]), torch.tensor([a["azimuth"][i]]))[0])]
            assert cap.endswith(f", {view} view")
    caps = {make_caption("cube", "red", 70.0, 0.0, random.Random(s)) for s in range(40)}
    assert "a red cube, overhead view" in caps and "a red cube" in caps
    assert any(c.startswith("a DSLR photo of ") for c in caps)


def _tiny_cfg(tmp_path: Path) -> PriorTrainConfig:
    return PriorTrainConfig(
        data=PriorDataConfig(n_images=16, supersample=1, cache_dir=str(tmp_path / "data")),
        arch=PriorArchConfig(
            vae_channels=[8, 16, 16],
            vae_groups=4,
            text_hidden=32,
            text_layers=1,
            text_heads=2,
            unet_channels=[16, 32, 32],
            unet_groups=8,
            unet_heads=2,
        ),
        num_threads=1,
        vae_steps=20,
        vae_batch_size=8,
        vae_lr=3e-3,
        unet_steps=20,
        unet_batch_size=8,
        unet_lr=2e-3,
        unet_warmup_steps=1,
        decoder_steps=4,
        sample_every_n_steps=0,
        ckpt_every_minutes=10.0,
        output_dir=str(tmp_path / "out"),
        progress_bar=False,
    )


def test_short_training_lowers_loss(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    data = render_dataset(cfg.data)
    x = torch.from_numpy(data["images"]).permute(0, 3, 1, 2).float() / 255
    caps = CaptionedImages(data, cfg.data)
    captions = [caps.caption(i, random.Random(i)) for i in range(len(x))]

    def losses(c: dict, scale: float):
        torch.manual_seed(0)
        with torch.no_grad():
            lv = float(vae_loss(c["vae"], x, 0.0)[0])
            mean, _ = encode_dataset(c["vae"], data)
            torch.manual_seed(0)
            ld = float(
                diffusion_loss(
                    c["unet"],
                    c["text_encoder"],
                    c["tokenizer"],
                    c["scheduler"].alphas_cumprod,
                    mean.repeat(8, 1, 1, 1) * scale,
                    captions * 8,
                )
            )
        return lv, ld, mean

    out = main(cfg, tmp_path / "run")
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    scale = pipe.vae.config.scaling_factor
    vae_after, diff_after, mean = losses(pipe.components, scale)
    assert abs(float((mean * scale).std()) - 1.0) < 1e-3  # unit-variance latents for the UNet
    vae_before, diff_before, _ = losses(build_components(cfg.arch, seed=0), scale)
    assert vae_after < 0.7 * vae_before
    assert diff_after < diff_before
    assert (tmp_path / "run" / "config.yaml").is_file()
    for stage in ("vae", "unet", "decoder"):
        assert (tmp_path / "run" / "ckpts" / stage / "last.ckpt").exists()
    # resume: the finished VAE stage is reused, not retrained
    vae_file = tmp_path / "run" / "vae" / "vae.safetensors"
    mtime = vae_file.stat().st_mtime_ns
    main(cfg, tmp_path / "run", resume=True)
    assert vae_file.stat().st_mtime_ns == mtime
    # export from the checkpoints alone (what `launch.py --export-only` calls)
    again = main(cfg, tmp_path / "run", export_only=True)
    assert StableDiffusionPipeline.from_pretrained(str(again)).vae.config.scaling_factor == pytest.approx(scale)


def test_classifier_api(tmp_path):
    model = ShapeColourClassifier().eval()
    imgs = torch.rand(3, 3, 96, 96)
    shapes, colours = classify(model, imgs)
    assert len(shapes) == len(colours) == 3
    assert set(shapes) <= set(SHAPES) and set(colours) <= set(COLOURS)


@pytest.mark.skipif(not (SHIPPED_CLASSIFIER / "model.safetensors").exists(), reason="classifier not shipped yet")
def test_shipped_classifier_accuracy():
    model = load_classifier(SHIPPED_CLASSIFIER)
    assert sum(p.numel() for p in model.parameters()) * 4 < 2 * 2**20
    assert classifier_accuracy(model, n_images=200, seed=4321) >= 0.9


def test_stage_checkpoints_are_atomic(tmp_path):
    from types import SimpleNamespace

    from gen3d.prior.fitting import stage_trainer
    from gen3d.reliability.checkpoint_io import AtomicCheckpointIO

    cfg = SimpleNamespace(ckpt_every_minutes=1.0, progress_bar=False)
    trainer = stage_trainer(cfg, tmp_path / "vae", max_steps=1, max_minutes=1.0)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # temp file + rename, weights-only reads
