"""rgb_as_latents (Latent-NeRF): the NeRF renders the prior's latents, the guidance takes them as they
are, people get RGB (VAE-decoded views, a texture through a fitted linear latent -> RGB map)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import trimesh

import launch
from gen3d.cli import run_from_args
from gen3d.diffusion.prior import load_prior, model_info
from gen3d.export.latent_rgb import fit_linear_map, pixel_pairs
from gen3d.geometry.hashgrid import HashGridConfig
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance
from gen3d.guidance.vsd import VSDConfig, VSDGuidance
from gen3d.render.background import BackgroundConfig, make_background
from gen3d.render.cameras import turntable
from gen3d.render.volume import RendererConfig, VolumeRenderer

TINY = [
    "camera.height=16",
    "camera.width=16",
    "renderer.num_samples_per_ray=24",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "trainer.checkpoint_every=100",
    "prompt_processor.cache_dir=null",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
]


def test_linear_latent_to_rgb_fit_recovers_a_known_map():
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen)
    latents = torch.randn(2, 5, 6, 4, generator=gen)  # [B,h,w,C] as rendered
    per_latent = latents @ weight + bias  # [B,h,w,3]
    # "decoded" views at factor 2: each latent pixel's 2x2 footprint averages to its colour
    decoded = per_latent.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    decoded = decoded + 0.3 * torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(5, 6)[None, :, :, None]
    mask = torch.zeros(2, 5, 6, dtype=torch.bool)
    mask[:, 1:4, 1:5] = True
    lat, rgb = pixel_pairs(latents, decoded, mask, min_pairs=8)
    assert lat.shape == (24, 4) and rgb.shape == (24, 3)
    torch.testing.assert_close(rgb, per_latent[mask])
    fitted = fit_linear_map(lat, rgb)
    torch.testing.assert_close(fitted.weight, weight, rtol=0, atol=1e-5)
    torch.testing.assert_close(fitted.bias, bias, rtol=0, atol=1e-5)
    torch.testing.assert_close(fitted(latents.reshape(-1, 4)), per_latent.reshape(-1, 3), rtol=0, atol=1e-5)
    # too few masked pixels: every pixel is used
    assert pixel_pairs(latents, decoded, mask, min_pairs=100)[0].shape == (60, 4)


@pytest.mark.parametrize("kind", ["sds", "vsd"])
def test_guidance_takes_rendered_latents_and_grads_reach_the_latent_albedo(tiny_pipeline, kind, monkeypatch):
    prior = load_prior(str(tiny_pipeline))
    channels, size = prior.unet.config.in_channels, prior.latent_size
    monkeypatch.setattr(prior, "encode_images", lambda images: pytest.fail("the VAE encoder must not run"))
    torch.manual_seed(0)
    geo_cfg = ImplicitVolumeConfig(hash_grid=HashGridConfig(n_levels=4, log2_hashmap_size=12), encoding_backend="torch")
    field = ImplicitVolume(geo_cfg, latent_channels=channels)
    scene = VolumeRenderer(
        RendererConfig(num_samples_per_ray=24, use_nerfacc="never"),
        field,
        make_background(BackgroundConfig(), channels),
    ).train()
    cams = turntable(2, 15.0, 2.3, 50.0, size, size)
    out = scene(cams, shading="albedo")
    latents = out["comp_rgb"].permute(0, 3, 1, 2)
    assert latents.shape == (2, channels, size, size)
    cond = prior.encode_text(["a red cube"] * 2)
    uncond = prior.encode_text([""] * 2)
    if kind == "sds":
        guidance = SDSGuidance(prior, GuidanceConfig(guidance_scale=10.0))
        g = guidance.loss_from_latents(latents, cond, uncond, step=0)
    else:
        guidance = VSDGuidance(prior, VSDConfig(lora_rank=2))
        g = guidance.loss_from_latents(latents, cond, uncond, step=0, c2w=cams.c2w)
        assert torch.isfinite(g["loss_lora"])
    g["loss"].backward()
    head = field.mlp[-1]  # rows: density, then the C latent channels
    assert head.out_features == 1 + channels
    assert head.weight.grad[1:].abs().sum(dim=1).min() > 0  # every latent channel gets a gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in scene.background.parameters())
    # renders at another size are resized to the UNet's (differentiably)
    small = scene(turntable(1, 15.0, 2.3, 50.0, size // 2, size // 2), shading="albedo")["comp_rgb"]
    assert torch.isfinite(
        SDSGuidance(prior, GuidanceConfig()).loss_from_latents(small.permute(0, 3, 1, 2), cond[:1], uncond[:1], step=0)[
            "loss"
        ]
    )


def test_rgb_as_latents_end_to_end_exports_a_textured_mesh(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "outputs"
    args = [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--steps",
        "4",
        "--output",
        str(out),
        "rgb_as_latents=true",
        "background.type=mlp",
        "trainer.preview_every=2",
        *TINY,
    ]
    result = run_from_args(launch.parse_args(args))
    run_dir = out / "dreamfusion" / "a-red-cube"
    assert Path(result["run_dir"]) == run_dir
    assert result["first_loss"] != pytest.approx(result["last_loss"])
    for rel in [
        "previews/step-000002.png",
        "video/turntable.mp4",
        "export/model.obj",
        "export/model.mtl",
        "export/model.png",
        "export/model.glb",
    ]:
        assert (run_dir / rel).is_file(), rel
    state = torch.load(run_dir / "ckpts" / "last.ckpt", weights_only=True)["state_dict"]
    head = [k for k in state if k.startswith("scenes.") and k.endswith("geometry.mlp.2.weight")]
    assert head and state[head[0]].shape[0] == 5  # density + 4 latent channels
    assert not any("vae" in k or "unet" in k for k in state)

    import imageio.v3 as iio

    preview = iio.imread(run_dir / "previews" / "step-000002.png")
    assert preview.shape[1] == 4 * 32  # decoded to turntable.resolution (latents rendered at 32 / 4)
    glb = trimesh.load(run_dir / "export" / "model.glb", force="mesh")
    assert len(glb.faces) > 0
    texture = glb.visual.material.baseColorTexture
    assert texture is not None and texture.size == (64, 64)

    # --export-only loads no prior for training: the VAE decode and the linear fit still work
    (run_dir / "export" / "model.glb").unlink()
    assert launch.main(["--resume", str(run_dir), "--export-only"]) == 0
    assert (run_dir / "export" / "model.glb").is_file()


def pixel_prior(tiny_pipeline: Path, dest: Path) -> Path:
    """The tiny pipeline without its VAE: a pixel-space prior."""
    shutil.copytree(tiny_pipeline, dest, ignore=shutil.ignore_patterns("vae"))
    index = json.loads((dest / "model_index.json").read_text())
    index.pop("vae")
    (dest / "model_index.json").write_text(json.dumps(index))
    return dest


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "has no VAE: rgb_as_latents needs a latent diffusion prior"),
        (["--config", "magic3d.yaml"], "rgb_as_latents works on NeRF (volume) stages only"),
        (["background.type=solid"], "rgb_as_latents needs background.type=mlp"),
        (["force_shading=normal"], "albedo shading only"),
        (
            ["stages=[{name: a, overrides: {}}, {name: b, overrides: {rgb_as_latents: false}}]"],
            "rgb_as_latents must be the same in every stage",
        ),
    ],
)
def test_rgb_as_latents_bad_input_is_one_line_exit_2(tiny_pipeline, tmp_path, capsys, extra, message):
    model = pixel_prior(tiny_pipeline, tmp_path / "pixel") if not extra else tiny_pipeline
    assert not model_info(str(model)).has_vae or extra
    config = [] if "--config" in extra else ["--config", "dreamfusion.yaml"]
    code = launch.main(
        [
            *config,
            "--prompt",
            "a red cube",
            "--model",
            str(model),
            "--output",
            str(tmp_path / "o"),
            "rgb_as_latents=true",
            "background.type=mlp",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.strip().count("\n") == 0
    assert err.startswith("error: ")
    assert not (tmp_path / "o").exists()  # no run directory
