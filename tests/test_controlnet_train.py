"""The builtin prior's canny ControlNet: zero-initialised residuals, training touches only the
ControlNet, the saved folder loads, checkpoints resume (all on a tiny random pipeline)."""

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gen3d.config import build_config, read_yaml
from gen3d.diffusion.control import controlled
from gen3d.diffusion.prior import load_prior
from gen3d.errors import UserError
from gen3d.prior.controlnet import (
    ControlNetModule,
    ControlNetTrainConfig,
    build_controlnet,
    canny_dataset,
    last_ckpt,
    main,
)
from gen3d.prior.controlnet_eval import edge_iou
from gen3d.prior.data import CaptionedImages, PriorDataConfig, render_dataset
from video.config import VideoEditConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "builtin-controlnet.yaml"


def _inputs(prior, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 16, 16, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    emb = prior.encode_text(["a red cube"] * n)
    cond = (torch.rand(n, 3, 64, 64, generator=g) > 0.9).float()
    return x, t, emb, cond


def test_config_file_matches_schema_and_video_thresholds():
    cfg = build_config(ControlNetTrainConfig, read_yaml(CONFIG))
    assert cfg == ControlNetTrainConfig()  # `python -m gen3d.prior.controlnet` trains what the YAML says
    assert cfg.system == "builtin-controlnet" and cfg.output_dir == "extern/builtin-controlnet-canny"
    assert cfg.data.seed != PriorDataConfig().seed  # held out from the prior's renders
    video = VideoEditConfig()
    assert (cfg.canny_low, cfg.canny_high) == (video.canny_low, video.canny_high)


def test_zero_initialised_controlnet_leaves_unet_unchanged(tiny_pipeline):
    prior = load_prior(str(tiny_pipeline))
    net = build_controlnet(prior.unet, ControlNetTrainConfig())
    x, t, emb, cond = _inputs(prior)
    with torch.no_grad():
        plain = prior.unet(x, t, encoder_hidden_states=emb).sample
        assert torch.equal(controlled(prior.unet, net, cond)(x, t, emb).sample, plain)
        torch.nn.init.normal_(net.controlnet_mid_block.weight, std=0.1)  # not zero any more: it acts
        assert not torch.allclose(controlled(prior.unet, net, cond)(x, t, emb).sample, plain, atol=1e-4)


def test_training_moves_only_the_controlnet_lowers_loss_and_resumes(tiny_pipeline, tmp_path):
    from diffusers import ControlNetModel

    cfg = ControlNetTrainConfig(
        prior=str(tiny_pipeline),
        data=PriorDataConfig(n_images=8, seed=3, cache_dir=str(tmp_path / "data")),
        steps=30,
        batch_size=8,
        lr=2e-3,
        warmup_steps=1,
        max_minutes=3.0,
        output_dir=str(tmp_path / "cn"),
        progress_bar=False,
    )
    prior = load_prior(str(tiny_pipeline))
    unet_before = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    out = main(cfg, tmp_path / "run")

    trained = ControlNetModel.from_pretrained(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert trained.controlnet_mid_block.weight.abs().max() > 0  # the zero convs have learned something
    fresh = load_prior(str(tiny_pipeline))  # the prior on disk did not move
    assert all(torch.equal(v, unet_before[k]) for k, v in fresh.unet.state_dict().items())
    state = torch.load(last_ckpt(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert state["state_dict"] and all(k.startswith("controlnet.") for k in state["state_dict"])  # prior left out

    # lower epsilon MSE on the training images than the zero-initialised ControlNet (= the plain prior)
    data = render_dataset(cfg.data)
    lat = load_file(str(tmp_path / "run" / "latents.safetensors"))["mean"] * fresh.vae.config.scaling_factor
    caps = CaptionedImages(data, cfg.data)
    captions = [caps.caption(i, random.Random(i)) for i in range(len(lat))]
    cond = canny_dataset(data, cfg.canny_low, cfg.canny_high).float().expand(-1, 3, -1, -1)

    def loss(net):
        torch.manual_seed(0)
        with torch.no_grad():
            return float(
                ControlNetModule(net, fresh, cfg).loss(lat.repeat(8, 1, 1, 1), captions * 8, cond.repeat(8, 1, 1, 1))
            )

    assert loss(trained) < 0.97 * loss(build_controlnet(fresh.unet, cfg))

    # resume: continues from last.ckpt up to the new step count
    cfg.steps = 34
    main(cfg, tmp_path / "run", resume=True)
    state = torch.load(last_ckpt(tmp_path / "run"), map_location="cpu", weights_only=True)
    assert state["global_step"] == 34


def test_edge_iou():
    a = torch.zeros(2, 3, 16, 16)
    a[:, :, 8, 2:14] = 1
    b = torch.zeros_like(a)
    b[0, :, 9, 2:14] = 1  # one pixel off: inside the tolerance
    b[1, :, 2:14, 3] = 1  # another line
    iou = edge_iou(a, b, tolerance=1)
    assert iou[0] == pytest.approx(0.5) and iou[1] < 0.15  # dilated: 2 of 4 rows shared; a crossing
    assert edge_iou(a, a, tolerance=0).tolist() == pytest.approx([1.0, 1.0])


SHIPPED = Path(__file__).resolve().parents[1] / "extern" / "builtin-controlnet-canny"


@pytest.mark.skipif(not (SHIPPED / "config.json").exists(), reason="ControlNet not shipped yet")
def test_shipped_controlnet_fits_the_builtin_prior():
    from diffusers import ControlNetModel

    assert sum(f.stat().st_size for f in SHIPPED.iterdir()) < 8 * 2**20
    net = ControlNetModel.from_pretrained(str(SHIPPED)).eval()
    try:
        prior = load_prior("builtin")
    except UserError:
        pytest.skip("builtin prior missing")
    x, t, emb, cond = _inputs(prior)
    with torch.no_grad():
        plain = prior.unet(x, t, encoder_hidden_states=emb).sample
        out = controlled(prior.unet, net, cond)(x, t, emb).sample
    assert out.shape == plain.shape and not torch.allclose(out, plain, atol=1e-3)  # trained: it acts
