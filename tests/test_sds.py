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
