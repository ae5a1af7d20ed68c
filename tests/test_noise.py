"""gen3d.diffusion.noise: the one home of the forward-diffusion maths gives exactly what the
formulas it replaced gave (restated here), and agrees with diffusers' DDPMScheduler."""

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from gen3d.diffusion.noise import add_noise, to_epsilon, training_target, velocity
from gen3d.errors import UserError

SCHED = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)  # SD's schedule


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    return x0, eps, torch.tensor([0, 421, 999])


def test_add_noise_and_velocity_equal_the_scheduler_and_the_old_formulas():
    x0, eps, t = _batch()
    a = SCHED.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = add_noise(SCHED.alphas_cumprod, x0, eps, t)
    assert torch.equal(noisy, a.sqrt() * x0 + (1 - a).sqrt() * eps)  # guidance/common.py, prior/train.py
    assert torch.equal(noisy, SCHED.add_noise(x0, eps, t))  # video/tune.py
    v = velocity(SCHED.alphas_cumprod, x0, eps, t)
    assert torch.equal(v, a.sqrt() * eps - (1 - a).sqrt() * x0)  # the v-prediction target (training_target)
    assert torch.equal(v, SCHED.get_velocity(x0, eps, t))
    assert noisy.dtype == torch.float32 and add_noise(SCHED.alphas_cumprod, x0.half(), eps, t).dtype == torch.float32
    assert float(noisy.sum()) == pytest.approx(53.43029, rel=1e-5)  # stored: inputs are seeded CPU draws


def test_training_targets_and_conversion_to_epsilon_round_trip():
    x0, eps, t = _batch(1)
    ac = SCHED.alphas_cumprod
    noisy = add_noise(ac, x0, eps, t)
    assert torch.equal(training_target("epsilon", ac, x0, eps, t), eps)
    assert torch.equal(training_target("sample", ac, x0, eps, t), x0)
    assert torch.equal(training_target("v_prediction", ac, x0, eps, t), velocity(ac, x0, eps, t))
    for kind in ("epsilon", "v_prediction", "sample"):
        back = to_epsilon(kind, ac, training_target(kind, ac, x0, eps, t), noisy, t)
        torch.testing.assert_close(back[:2], eps[:2], rtol=1e-4, atol=1e-4)  # t = 999 for x0 is ill-conditioned
    a = ac[t].view(-1, 1, 1, 1)
    out = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))  # Prior.to_epsilon before the move:
    assert torch.equal(to_epsilon("v_prediction", ac, out, noisy, t), a.sqrt() * out + (1 - a).sqrt() * noisy)
    assert torch.equal(to_epsilon("sample", ac, out, noisy, t), (noisy - a.sqrt() * out) / (1 - a).sqrt())
    with pytest.raises(UserError, match="unsupported prediction_type 'flow'"):
        training_target("flow", ac, x0, eps, t)


def test_prior_diffusion_loss_equals_the_old_formula(tiny_pipeline):
    from gen3d.diffusion.prior import load_prior
    from gen3d.prior.losses import diffusion_loss

    p = load_prior(str(tiny_pipeline))
    lat, captions = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(3)), ["a red cube", ""]
    torch.manual_seed(0)
    new = diffusion_loss(p.unet, p.text_encoder, p.tokenizer, p.alphas_cumprod, lat, captions)
    torch.manual_seed(0)  # the epsilon-only loss gen3d/prior/train.py had
    noise = torch.randn_like(lat)
    t = torch.randint(0, len(p.alphas_cumprod), (2,))
    a = p.alphas_cumprod[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        ids = p.tokenizer(
            captions,
            padding="max_length",
            max_length=p.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pred = p.unet(a.sqrt() * lat + (1 - a).sqrt() * noise, t, encoder_hidden_states=p.text_encoder(ids)[0]).sample
    assert float(new) == float(F.mse_loss(pred, noise))
