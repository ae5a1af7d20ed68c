"""CUDA paths (skipped without a GPU): nerfacc's packed sampler against the pure-PyTorch one,
half-precision priors for SDS and VSD, and short text-to-3D runs on the GPU."""

import pytest
import torch

import launch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_nerfacc_renderer_agrees_with_torch():
    pytest.importorskip("nerfacc")
    from gen3d.render.occupancy import TorchOccupancyGrid
    from tests.test_volume import SphereField, _camera, _renderer

    cams = _camera(h=32, w=32).to("cuda")
    images = {}
    for backend in ("never", "always"):
        r = _renderer(SphereField(3.0, 0.5), samples=512, use_nerfacc=backend, stratified=False).cuda().train()
        for step in range(0, 64, 16):  # fill the occupancy grid (nerfacc updates only in training mode)
            r.update_step(step)
        r.eval()
        images[backend] = r(cams, shading="albedo")["comp_rgb"]
        assert isinstance(r.occupancy, TorchOccupancyGrid) == (backend == "never")
    assert (images["never"] - images["always"]).abs().mean() < 0.02


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_vsd_step(tiny_pipeline, dtype):
    from gen3d.diffusion.prior import load_prior
    from gen3d.guidance.vsd import VSDConfig, VSDGuidance

    prior = load_prior(str(tiny_pipeline), "cuda", dtype)
    guidance = VSDGuidance(prior, VSDConfig(lora_rank=4))
    images = torch.rand(2, 3, 64, 64, device="cuda", requires_grad=True)
    cond = prior.encode_text(["a red cube"] * 2)
    uncond = prior.encode_text([""] * 2)
    c2w = torch.eye(4, device="cuda").expand(2, 4, 4)
    out = guidance(images, cond, uncond, step=0, c2w=c2w)
    (out["loss"] + out["loss_lora"]).backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(out["loss_lora"])
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    lora = list(guidance.lora.parameters())
    assert all(p.dtype == torch.float32 for p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)


@pytest.mark.parametrize(
    "config, precision", [("dreamfusion.yaml", "16-mixed"), ("prolificdreamer.yaml", "bf16-mixed")]
)
def test_text3d_runs_on_cuda(tiny_pipeline, tmp_path, monkeypatch, config, precision):
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:  # a GPU machine without ffmpeg: record the turntable instead of encoding it
        import gen3d.systems.runner as runner

        monkeypatch.setattr(runner, "write_video", lambda path, frames, fps: path)
    steps = [
        "trainer.max_steps=4",
        "trainer.checkpoint_every=2",
        "trainer.preview_every=2",
        "export.resolution=32",
        f"trainer.precision={precision}",
        "turntable.n_views=2",
    ]
    if config == "prolificdreamer.yaml":
        steps = ["stages=[{name: nerf, overrides: {trainer: {max_steps: 4}}}]", *steps[1:]]
    code = launch.main(
        [
            "--config",
            config,
            "--prompt",
            "a red cube",
            "--model",
            str(tiny_pipeline),
            "--device",
            "cuda",
            "--output",
            str(tmp_path),
            *steps,
        ]
    )
    assert code == 0
    glb = list(tmp_path.rglob("model.glb"))
    assert len(glb) == 1 and glb[0].stat().st_size > 0
