"""Test doubles: a Prior whose UNet's noise prediction is a known closed form."""

from types import SimpleNamespace

import torch
from diffusers import DDPMScheduler

from gen3d.diffusion.prior import Prior


class StubUNet(torch.nn.Module):
    """eps(x, t, c) = 0.5 * x + 0.001 * t + mean(c) : known, depends on all three inputs."""

    config = SimpleNamespace(sample_size=8)

    def forward(self, x, t, encoder_hidden_states, **kwargs):
        c = encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)
        return SimpleNamespace(sample=0.5 * x + 0.001 * t.view(-1, 1, 1, 1).float() + c)

    @staticmethod
    def expected(x, t, c):
        return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1).float() + c.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def stub_prior(prediction_type: str = "epsilon") -> Prior:
    """A pixel-space Prior (no VAE) with the stub UNet and a real DDPM schedule."""
    return Prior(
        unet=StubUNet(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        scheduler=DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type),
        path=".",
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
