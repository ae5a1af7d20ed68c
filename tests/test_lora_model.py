"""VSD's LoRA on a second model (guidance.lora_model), on two tiny random-weight pipelines."""

from pathlib import Path

import pytest
import torch

import launch
from gen3d.config import build_config
from gen3d.diffusion.prior import load_prior
from gen3d.guidance import GuidanceContext, build_guidance
from gen3d.guidance.vsd import VSDConfig
from tests.test_profiles import TINY


@pytest.fixture(scope="module")
def second_pipeline(tmp_path_factory):
    from gen3d.prior.model import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("pipe2") / "tiny-2", seed=1)


def adapters(unet) -> set:
    return set(getattr(unet, "peft_config", None) or {})


def test_lora_sits_on_the_second_model_and_the_next_stage_continues_it(tiny_pipeline, second_pipeline):
    prior = load_prior(str(tiny_pipeline))
    cfg = build_config(VSDConfig, {"lora_model": str(second_pipeline)})
    guide = build_guidance(prior, cfg, GuidanceContext())
    assert guide.lora_prior is not prior and guide.lora.unet is guide.lora_prior.unet
    assert guide.lora_prior.path == Path(second_pipeline).resolve()
    assert adapters(guide.lora_prior.unet) == {"vsd"} and adapters(prior.unet) == set()  # the prior stays bare
    assert guide.lora_prior.text_encoder is None and guide.lora_prior.vae is None  # the prior's embeddings, latents

    # a different model's scores: the zero-initialised LoRA on model 2 is not the prior's eps
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 8, 64, generator=g)
    t = torch.tensor([500])
    with torch.no_grad():
        assert (prior.unet_eps(x, t, cond) - guide.lora_prior.unet_eps(x, t, cond)).abs().max() > 1e-3
    out = guide(torch.rand(1, 3, 64, 64), cond, cond, 0, generator=g, c2w=torch.eye(4)[None])
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["loss_lora"])

    later = build_guidance(prior, cfg, GuidanceContext(state=guide.state()))
    assert later.lora is guide.lora and later.lora_prior is guide.lora_prior  # loaded once, continued

    shared = build_guidance(load_prior(str(tiny_pipeline)), build_config(VSDConfig, {}), GuidanceContext())
    assert shared.lora_prior is shared.prior  # the default: one UNet for both scores


def test_prolificdreamer_stage_chain_with_a_second_lora_model(tiny_pipeline, second_pipeline, tmp_path):
    from gen3d.cli import run_from_args

    stages = (
        "stages=[{name: nerf, overrides: {trainer: {max_steps: 2}}}, {name: geometry, overrides: "
        "{representation: mesh, force_shading: normal, train_texture: false, guidance: {type: sds}, "
        "trainer: {max_steps: 1}}}, {name: texture, overrides: {representation: mesh, train_geometry: false, "
        "trainer: {max_steps: 1}}}]"
    )
    args = ["--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    args += ["--output", str(tmp_path), *TINY, "camera.height=16", "camera.width=16", "mesh.resolution=32", stages]
    run_dir = Path(run_from_args(launch.parse_args(args + [f"guidance.lora_model={second_pipeline}"]))["run_dir"])
    for stage in ("nerf", "texture"):
        state = torch.load(run_dir / "ckpts" / stage / "last.ckpt", map_location="cpu", weights_only=True)
        lora_keys = [k for k in state["state_dict"] if k.startswith("vsd_lora.")]
        assert lora_keys and not any(".base_layer." in k for k in lora_keys)  # LoRA only, no frozen weights
    assert (run_dir / "export" / "model.glb").is_file()
