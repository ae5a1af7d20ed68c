"""Fit a density field to one of the builtin world's true shapes (the fixed-point diagnostic).

`fit_to_primitive` trains an `ImplicitVolume` (or any field with the same ``forward(points) ->
{density, albedo}``) so that its occupancy is the true shape of `gen3d.prior.data` (upright, unit
scale) and its albedo the prompt's colour there. `bench/bench_fixed_point.py` starts a method from
such a field and measures how far the guidance moves the export away from the truth: it separates
what the representation and the export can hold (the fitted field's own export) from what the
guidance keeps (the same run after training), and both from the from-scratch runs of
`bench/bench_quality.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gen3d.prior.data import COLOUR_RGB, _sdf

# the occupancy of one render sample: 1 - exp(-density * STEP), STEP about the renderer's sample spacing
STEP = 0.05


def fit_to_primitive(
    field: torch.nn.Module,
    shape: str,
    colour: str,
    steps: int = 1500,
    points: int = 8192,
    lr: float = 0.01,
    radius: float = 1.0,
    seed: int = 0,
) -> float:
    """Fit ``field`` in place; returns the last loss (occupancy cross-entropy + albedo squared error).

    Each step draws ``points`` points: half uniform in the box [-radius, radius]^3, half uniform and kept
    within 0.1 of the surface (where the shape is decided). The albedo is fitted inside and within 0.05 of
    the surface."""
    rgb = torch.tensor(COLOUR_RGB[colour])
    params = [p for p in field.parameters() if p.requires_grad]
    device = params[0].device
    rgb = rgb.to(device)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(steps):
        p = (torch.rand(points, 3, generator=gen) * 2 - 1) * radius
        half = p[: points // 2]
        p = torch.cat([p[points // 2 :], half[_sdf(shape, half).abs() < 0.1]])
        sdf = _sdf(shape, p).to(device)
        out = field(p.to(device))
        occupancy = (1 - torch.exp(-out["density"][:, 0] * STEP)).clamp(1e-5, 1 - 1e-5)
        loss = F.binary_cross_entropy(occupancy, (sdf < 0).float())
        near = sdf < 0.05
        if bool(near.any()):
            loss = loss + (out["albedo"][near, :3] - rgb).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())
