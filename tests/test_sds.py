from types import SimpleNamespace

import pytest
import torch

from gen3d.guidance import common
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance, sds_gradient
from tests.stubs import StubUNet, stub_prior


def test_sds_loss_gradient_equals_closed_form():
    prior = stub_prior()
    torch.manual_seed(0)
    latents = torch.rand(2, 3, 8, 8, requires_grad=True)
    t = torch.tensor([100, 700])
    noise = torch.randn(2, 3, 8, 8)
    cond, uncond = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    s = 7.5
    grad = sds_gradient(prior, latents, t, noise, cond, uncond, s, "sds")
    loss = common.loss_with_gradient(latents, grad)
    loss.backward()

    a = prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * latents.detach() + (1 - a).sqrt() * noise
    eps_hat = StubUNet.expected(x_t, t, uncond) + s * (
        StubUNet.expected(x_t, t, cond) - StubUNet.expected(x_t, t, uncond)
    )
    expected = (1 - a) * (eps_hat - noise)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(latents.grad, expected / 2, rtol=1e-5, atol=1e-6)


def test_guidance_nan_guard_clip_and_t_range():
    prior = stub_prior()
    cfg = GuidanceConfig(guidance_scale=1.0, min_step_percent=0.2, max_step_percent=[0, 0.98, 0.5, 10], grad_clip=0.01)
    guidance = SDSGuidance(prior, cfg)
    gen = torch.Generator().manual_seed(0)
    ts = guidance.timesteps(4000, step=20, generator=gen)
    assert ts.min() >= 200 and ts.max() <= 500  # annealed t_max
    ts0 = guidance.timesteps(4000, step=0, generator=gen)
    assert ts0.max() > 900
    latents = torch.rand(1, 3, 8, 8, requires_grad=True)
    grad = torch.full((1, 3, 8, 8), 5.0)
    grad[0, 0, 0, 0] = float("nan")
    out = guidance.finish(latents, grad, step=0)
    out["loss"].backward()
    assert out["nan"]
    assert torch.isfinite(latents.grad).all()
    assert latents.grad.abs().max() == pytest.approx(0.01)


def test_weightings():
    a = torch.linspace(0.99, 0.01, 1000)
    t = torch.tensor([10, 500])
    assert torch.allclose(common.weighting(a, t, "sds").flatten(), 1 - a[t])
    assert torch.allclose(common.weighting(a, t, "uniform").flatten(), torch.ones(2))
    with pytest.raises(Exception, match="unknown guidance weighting"):
        common.weighting(a, t, "nope")


def test_v_prediction_converted_to_epsilon():
    prior = stub_prior("v_prediction")
    x_t, v, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([10, 900])
    a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
    eps = prior.to_epsilon(v, x_t, t)
    torch.testing.assert_close(eps, a.sqrt() * v + (1 - a).sqrt() * x_t)


def test_guidance_resolution_sets_the_encoder_input_size():
    """guidance.resolution: renders are resized to it before the encoder (None: the prior's native size)."""
    from gen3d.config import build_config

    prior, seen = stub_prior(), []
    encode = prior.encode_images

    def spy(images, **kwargs):
        seen.append((tuple(images.shape[-2:]), kwargs.get("resize", True)))
        return encode(images, **kwargs)

    prior.encode_images = spy
    cond = torch.randn(1, 4, 8)
    for size in (None, 16):
        guide = SDSGuidance(prior, build_config(GuidanceConfig, {"resolution": size}))
        out = guide(torch.rand(1, 3, 32, 32, requires_grad=True), cond, cond, 0)
        assert torch.isfinite(out["loss"])
    assert seen == [((32, 32), True), ((16, 16), False)]  # native: encode_images resizes; else 16 px


def test_image_term_is_the_squared_error_to_the_decoded_prediction():
    """HiFA's image-space term (guidance.image_weight): the stub prior has no VAE (latents = 2 x - 1), so
    the decoded prediction is x0_hat / 2 + 1/2, with x0_hat = x - sqrt((1 - a_t) / a_t) (eps_hat - eps)."""
    from gen3d.guidance.sds import image_term, predicted_clean, sds_residual

    prior = stub_prior()
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    latents = images * 2 - 1
    t, noise = torch.tensor([100, 700]), torch.randn(2, 3, 8, 8)
    cond, uncond = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    residual = sds_residual(prior, latents, t, noise, cond, uncond, 7.5)
    a = prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * latents.detach() + (1 - a).sqrt() * noise
    eps_hat = residual + noise
    clean = predicted_clean(prior, latents, t, residual)
    torch.testing.assert_close(clean, (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt(), rtol=1e-4, atol=1e-4)
    term = image_term(prior, images, clean)
    target = (clean * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(term, (images - target).square().mean())
    term.backward()
    torch.testing.assert_close(images.grad, 2 * (images - target).detach() / images.numel())


def test_image_weight_adds_the_term_to_the_sds_loss():
    prior = stub_prior()
    images = torch.rand(1, 3, 8, 8)
    cond, uncond = torch.randn(1, 4, 5), torch.randn(1, 4, 5)
    losses = {}
    for weight in (0.0, 100.0):
        guidance = SDSGuidance(prior, GuidanceConfig(guidance_scale=7.5, image_weight=weight))
        out = guidance(images, cond, uncond, step=0, generator=torch.Generator().manual_seed(3))
        losses[weight] = float(out["loss"])
        assert ("clean_latents" in out) == (weight > 0)
    assert losses[100.0] > losses[0.0]


def test_image_term_pulls_a_colour_the_vae_hardly_sees_back():
    """On the builtin prior a green patch on a blue square barely moves the latents (the VAE keeps about a
    quarter of it, docs/methods.md), so latent SDS hardly corrects it; the image term pulls it back."""
    from gen3d.diffusion.prior import load_prior
    from gen3d.guidance.sds import image_term

    prior = load_prior("builtin", device="cpu", dtype=torch.float32)
    blue = torch.ones(1, 3, 64, 64)
    blue[:, :, 16:48, 16:48] = torch.tensor([0.1, 0.2, 0.9]).view(1, 3, 1, 1)
    teal = blue.clone()
    teal[:, 1, 24:40, 24:40] += 0.3
    with torch.no_grad():
        clean = prior.encode_images(blue, sample=False)
        kept = prior.decode_latents(prior.encode_images(teal, sample=False))[0, 1, 32, 32] - 0.2
    assert float(kept) < 0.15  # most of the +0.3 green is lost through the VAE
    teal.requires_grad_(True)
    image_term(prior, teal, clean).backward()
    assert float(teal.grad[0, 1, 24:40, 24:40].mean()) > 0  # descending the term lowers the green


class _GainUNet(StubUNet):
    """eps(x, t, c) = mean(c) * x: the conditioning sets the prediction's scale."""

    def forward(self, x, t, encoder_hidden_states, **kwargs):
        return SimpleNamespace(sample=encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1) * x)


def test_guidance_rescale_brings_the_guided_eps_to_the_conditional_std():
    from gen3d.diffusion.prior import cfg_rescale

    prior = stub_prior()
    prior.unet = _GainUNet()
    torch.manual_seed(3)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([300, 800])
    cond, uncond = torch.full((2, 4, 5), 1.0), torch.full((2, 4, 5), 0.9)
    plain = prior.predict_noise(x, t, cond, uncond, 20.0)  # (0.9 + 20 * 0.1) x = 2.9 x
    eps_c = x
    std = lambda e: e.flatten(1).std(1)  # noqa: E731
    torch.testing.assert_close(std(plain), 2.9 * std(eps_c))
    full = prior.predict_noise(x, t, cond, uncond, 20.0, guidance_rescale=1.0)
    torch.testing.assert_close(full, eps_c, rtol=1e-5, atol=1e-5)
    half = prior.predict_noise(x, t, cond, uncond, 20.0, guidance_rescale=0.5)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain, rtol=1e-5, atol=1e-5)
    assert cfg_rescale(plain, eps_c, 0.0) is plain
    # the SDS guidance reads it from its config
    latents = torch.rand(2, 3, 8, 8, requires_grad=True)
    g = torch.Generator()
    norms = [
        SDSGuidance(prior, GuidanceConfig(guidance_scale=20.0, guidance_rescale=r))(
            latents, cond, uncond, 0, generator=g.manual_seed(0)
        )["grad_norm"]
        for r in (0.0, 1.0)
    ]
    assert norms[1] < 0.8 * norms[0]
