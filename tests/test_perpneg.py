"""Perp-Neg's guided epsilon against a stub UNet whose prediction depends on the prompt per pixel."""

import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler

from gen3d.diffusion.perpneg import PerpNegConfig, perp_neg_eps, perp_neg_inputs, perpendicular
from gen3d.diffusion.prior import Prior
from gen3d.diffusion.views import VIEWS

C, H = 3, 4  # latents [B,3,4,4]; embeddings [B,L,48]


class PixelStubUNet(torch.nn.Module):
    """eps(x, t, c) = 0.5 x + 0.001 t + mean_L(c) reshaped to the latent shape."""

    config = SimpleNamespace(sample_size=H)

    def forward(self, x, t, encoder_hidden_states, **kwargs):
        return SimpleNamespace(sample=self.expected(x, t, encoder_hidden_states))

    @staticmethod
    def expected(x, t, c):
        return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1).float() + c.mean(1).view(-1, C, H, H)


def prior():
    return Prior(
        unet=PixelStubUNet(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        scheduler=DDPMScheduler(num_train_timesteps=1000),
        path=".",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def test_perp_neg_eps_equals_closed_form():
    torch.manual_seed(0)
    x, t = torch.randn(2, C, H, H), torch.tensor([100, 600])
    pos, uncond, negs = torch.randn(2, 5, 48), torch.randn(2, 5, 48), torch.randn(2, 2, 5, 48)
    w, s = torch.tensor([[-0.5, -1.5], [-2.0, 0.3]]), 7.5
    got = perp_neg_eps(prior(), x, t, pos, uncond, negs, w, s)

    f = PixelStubUNet.expected
    eu = f(x, t, uncond)
    e_pos = f(x, t, pos) - eu
    expected = eu + s * e_pos
    for b in range(2):
        y = e_pos[b].flatten()
        for i in range(2):
            e = (f(x, t, negs[:, i]) - eu)[b].flatten()
            expected[b] += s * w[b, i] * (e - (e @ y) / (y @ y) * y).view(C, H, H)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_perpendicular_is_orthogonal_and_zero_weights_give_cfg():
    torch.manual_seed(1)
    a, b = torch.randn(3, C, H, H), torch.randn(3, C, H, H)
    assert (perpendicular(a, b) * b).flatten(1).sum(1).abs().max() < 1e-4
    x, t = torch.randn(3, C, H, H), torch.tensor([1, 2, 3])
    pos, uncond = torch.randn(3, 5, 48), torch.randn(3, 5, 48)
    p = prior()
    got = perp_neg_eps(p, x, t, pos, uncond, torch.randn(3, 2, 5, 48), torch.zeros(3, 2), 7.5)
    torch.testing.assert_close(got, p.predict_noise(x, t, pos, uncond, 7.5), rtol=1e-5, atol=1e-5)


def test_view_interpolation_and_weights():
    views = torch.arange(len(VIEWS), dtype=torch.float32).view(-1, 1, 1).expand(-1, 2, 3)  # emb of view v = v
    uncond = torch.full((5, 2, 3), -1.0)
    elev = torch.tensor([0.0, 0.0, 0.0, 0.0, 80.0])
    azim = torch.tensor([0.0, 45.0, 90.0, 180.0, 0.0])
    pos, negs, w = perp_neg_inputs(views, uncond, elev, azim)
    front, side, back, overhead = (VIEWS.index(v) for v in ("front", "side", "back", "overhead"))
    assert pos[:, 0, 0].tolist() == pytest.approx([front, 0.5 * front + 0.5 * side, side, back, overhead])
    cfg, e = PerpNegConfig(), math.exp
    assert w[0].tolist() == pytest.approx([-(4 * e(-0.5) - 2.426), -(4 - 2.426)], abs=1e-4)
    assert w[3].tolist() == pytest.approx([-(1 - 0.606), -(1 + 0.967)], abs=1e-4)
    assert negs[0, :, 0, 0].tolist() == [front, side] and negs[3, :, 0, 0].tolist() == [side, front]
    assert w[4].tolist() == [0.0, 0.0] and (negs[4] == -1).all()
    assert cfg.f_fs == [4.0, 0.5, -2.426]


def test_perp_neg_guidance_rescale_acts_on_the_combined_eps():
    from gen3d.diffusion.prior import cfg_rescale

    torch.manual_seed(2)
    x, t = torch.randn(3, C, H, H), torch.tensor([1, 2, 3])
    pos, uncond, negs = torch.randn(3, 5, 48), torch.randn(3, 5, 48), torch.randn(3, 2, 5, 48)
    w = torch.rand(3, 2)
    p = prior()
    plain = perp_neg_eps(p, x, t, pos, uncond, negs, w, 7.5)
    got = perp_neg_eps(p, x, t, pos, uncond, negs, w, 7.5, rescale=0.7)
    e_pos = p.unet_eps(x, t, pos).float()
    torch.testing.assert_close(got, cfg_rescale(plain, e_pos, 0.7), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain)
