"""The Perp-Neg guidance types' gradients against stub UNets: sds-perpneg = w(t) (eps_perpneg - eps);
vsd-perpneg = w(t) (eps_perpneg - eps_phi(plain prompt, camera)), its LoRA trained on the plain prompt."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from gen3d.config import build_config
from gen3d.diffusion.lora import VSDLoRA
from gen3d.diffusion.noise import add_noise
from gen3d.diffusion.perpneg import perp_neg_eps, perp_neg_inputs
from gen3d.diffusion.prior import Prior, load_prior
from gen3d.diffusion.views import VIEWS, ViewConfig
from gen3d.guidance import common
from gen3d.guidance.perpneg import (
    PerpNegViews,
    SDSPerpNegConfig,
    SDSPerpNegGuidance,
    VSDPerpNegConfig,
    VSDPerpNegGuidance,
)
from gen3d.guidance.vsd import lora_eps, lora_loss

B, C, S, D = 2, 4, 16, 64  # latents [B,4,16,16] (the tiny pipeline's), embeddings [B,8,64]


class ProjectionStubUNet(torch.nn.Module):
    """eps(x, t, c) = 0.5 x + 0.001 t + mean_L(c) P: the prompt moves every latent pixel differently."""

    config = SimpleNamespace(sample_size=S, in_channels=C)

    def __init__(self):
        super().__init__()
        self.register_buffer("proj", torch.randn(D, C * S * S, generator=torch.Generator().manual_seed(3)) / D)

    def forward(self, x, t, encoder_hidden_states, **kwargs):
        return SimpleNamespace(sample=self.expected(x, t, encoder_hidden_states))

    def expected(self, x, t, c):
        return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1).float() + (c.float().mean(1) @ self.proj).view(-1, C, S, S)


def stub_prior() -> Prior:
    return Prior(
        unet=ProjectionStubUNet(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        scheduler=DDPMScheduler(num_train_timesteps=1000),
        path=".",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def views(seed=0) -> PerpNegViews:
    """Perp-Neg's prompt inputs without a text encoder: random view embeddings and plain prompt."""
    g = torch.Generator().manual_seed(seed)
    v = PerpNegViews.__new__(PerpNegViews)
    v.view_emb, v.views, v.plain = (
        torch.randn(len(VIEWS), 8, D, generator=g),
        ViewConfig(),
        torch.randn(1, 8, D, generator=g),
    )
    return v


def cameras():
    c2w = torch.eye(4).repeat(B, 1, 1)
    c2w[:, :3, 3] = torch.tensor([[0.0, 0.5, 2.0], [1.5, 0.3, -1.0]])
    return SimpleNamespace(elevation=torch.tensor([10.0, 20.0]), azimuth=torch.tensor([30.0, 140.0]), c2w=c2w)


def drawn(guide, seed):
    """The timesteps and noise a guidance call with generator(seed) draws, and the generator after them."""
    g = torch.Generator().manual_seed(seed)
    t = guide.timesteps(B, 0, g)
    return t, torch.randn(B, C, S, S, generator=g), g


def closed_form_perpneg(unet, x_t, t, v, uncond, cams, scale):
    """eps_u + s (e_pos + sum_i w_i perp(e_i, e_pos)), written out per sample."""
    pos, negs, w = perp_neg_inputs(v.view_emb, uncond, cams.elevation, cams.azimuth)
    eu = unet.expected(x_t, t, uncond)
    e_pos = unet.expected(x_t, t, pos) - eu
    out = eu + scale * e_pos
    for b in range(B):
        y = e_pos[b].flatten()
        for i in range(negs.shape[1]):
            e = (unet.expected(x_t, t, negs[:, i]) - eu)[b].flatten()
            out[b] += scale * w[b, i] * (e - (e @ y) / (y @ y) * y).view(C, S, S)
    return out


def test_sds_perpneg_gradient_is_weighted_perpneg_minus_noise():
    prior, v, cams = stub_prior(), views(), cameras()
    cfg = build_config(SDSPerpNegConfig, {"guidance_scale": 7.5, "weighting": "sds"})
    guide = SDSPerpNegGuidance(prior, cfg, v)
    latents = torch.randn(B, C, S, S, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    cond, uncond = torch.randn(B, 8, D), torch.randn(B, 8, D)
    out = guide.loss_from_latents(latents, cond, uncond, 0, generator=torch.Generator().manual_seed(5), cameras=cams)
    out["loss"].backward()

    t, noise, _ = drawn(guide, 5)
    assert torch.equal(out["t"], t)
    x_t = add_noise(prior.alphas_cumprod, latents.detach(), noise, t)
    eps = closed_form_perpneg(prior.unet, x_t, t, v, uncond, cams, 7.5)
    expected = common.weighting(prior.alphas_cumprod, t, "sds") * (eps - noise)
    assert expected.abs().max() > 1e-2
    torch.testing.assert_close(latents.grad * B, expected, rtol=1e-4, atol=1e-5)
    # not plain CFG of the per-view prompt: the negatives change the gradient
    cfg_eps = prior.predict_noise(x_t, t, cond, uncond, 7.5)
    assert (eps - cfg_eps).abs().max() > 1e-2
    with pytest.raises(ValueError, match="cameras"):
        guide.loss_from_latents(latents, cond, uncond, 0)


@pytest.fixture(scope="module")
def lora_prior(tiny_pipeline):
    return load_prior(str(tiny_pipeline))


def test_vsd_perpneg_pretrained_branch_only(lora_prior):
    """Pretrained branch: Perp-Neg on a stub UNet; LoRA branch (a second model, the tiny pipeline): the
    view-independent prompt and the camera, in the gradient and in the LoRA's own loss."""
    prior, v, cams = stub_prior(), views(), cameras()
    cfg = build_config(VSDPerpNegConfig, {"guidance_scale": 7.5, "camera_condition_dropout": 0.0})
    lora = VSDLoRA(lora_prior.unet, rank=4)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in lora.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    guide = VSDPerpNegGuidance(prior, cfg, v, lora=lora, lora_prior=lora_prior)
    latents = torch.randn(B, C, S, S, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    cond, uncond = torch.randn(B, 8, D), torch.randn(B, 8, D)
    out = guide.loss_from_latents(
        latents, cond, uncond, 0, generator=torch.Generator().manual_seed(7), c2w=cams.c2w, cameras=cams
    )
    out["loss"].backward()

    t, noise, g = drawn(guide, 7)
    x_t = add_noise(prior.alphas_cumprod, latents.detach(), noise, t)
    plain = v.plain.expand(B, -1, -1)
    with torch.no_grad():
        eps_phi = lora_eps(lora_prior, lora, x_t, t, plain, cams.c2w)
        eps_phi_view = lora_eps(lora_prior, lora, x_t, t, cond, cams.c2w)
    eps_pn = closed_form_perpneg(prior.unet, x_t, t, v, uncond, cams, 7.5)
    weight = common.weighting(prior.alphas_cumprod, t, "sds")
    torch.testing.assert_close(latents.grad * B, weight * (eps_pn - eps_phi), rtol=1e-4, atol=1e-5)
    assert (eps_phi - eps_phi_view).abs().max() > 1e-4  # the branch's prompt matters, and it is the plain one
    with torch.no_grad():
        want = lora_loss(lora_prior, lora, latents.detach(), plain, cams.c2w, 0.0, 1, g)
    torch.testing.assert_close(out["loss_lora"].detach(), want)
    # checked against the same module's reference call (perp_neg_eps) as well
    pos, negs, w = perp_neg_inputs(v.view_emb, uncond, cams.elevation, cams.azimuth)
    torch.testing.assert_close(perp_neg_eps(prior, x_t, t, pos, uncond, negs, w, 7.5), eps_pn, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "config, guidance", [("dreamfusion.yaml", "sds-perpneg"), ("prolificdreamer.yaml", "vsd-perpneg")]
)
def test_perpneg_types_run_from_the_command_line(config, guidance, tiny_pipeline, tmp_path):
    import launch
    from gen3d.cli import run_from_args
    from tests.test_profiles import TINY

    args = ["--config", config, "--prompt", "a red cube", "--model", str(tiny_pipeline), "--output", str(tmp_path)]
    args += [*TINY, "camera.height=16", "camera.width=16", f"guidance.type={guidance}"]
    # ProlificDreamer: its VSD stage only (the Perp-Neg type replaces VSD there)
    args += ["stages=[{name: nerf, overrides: {trainer: {max_steps: 2}}}]"] if "vsd" in guidance else ["--steps", "2"]
    result = run_from_args(launch.parse_args(args))
    assert torch.isfinite(torch.tensor(result["last_loss"]))
    assert f"type: {guidance}" in (Path(result["run_dir"]) / "config.yaml").read_text()


def test_perpneg_without_view_prompts_is_one_line(tiny_pipeline, tmp_path, capsys):
    import launch

    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    args += ["--output", str(tmp_path / "o"), "guidance.type=sds-perpneg", "prompt_processor.view_dependent=false"]
    code = launch.main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "view_dependent=true" in err, err
    assert not (tmp_path / "o").exists()
