"""Every method's stage chain, a few steps, on random-weight pipelines in Stable Diffusion's real layouts.

SD 1.5 (safety_checker / feature_extractor in model_index.json; fp16-variant files only, .bin only, or every
copy the hub repository holds: safety checker folder, root .ckpt files, non-EMA weights), SD 2.1-base
(OpenCLIP ViT-H text encoder shape, pad token "!"), SD 2.1 (v-prediction DDIM config); widths reduced
(gen3d.diffusion.random_pipelines), the configs' keys real. Both loading paths: the 3D methods and video.
"""

import pytest
import torch

import launch
from gen3d.cli import run_from_args
from gen3d.diffusion.random_pipelines import write_pipeline
from tests.test_methods import M3_STAGES, PD_STAGES, TINY


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {
        name: write_pipeline(kind, root / name, weights=weights)
        for name, kind, weights in [
            ("sd15-fp16", "sd15", "fp16"),
            ("sd15-bin", "sd15", "bin"),
            ("sd15-all", "sd15", "all"),
            ("sd21-base", "sd21-base", "safetensors"),
            ("sd21", "sd21", "safetensors"),
        ]
    }


# the configs are paper scale on these layouts (the sd profile): cut what a few CPU steps cannot afford
PAPER_SCALE_CUTS = [
    "renderer.num_samples_per_ray=24",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
    "trainer.precision=32-true",
]


def run(config, model, out, *extra):
    return run_from_args(
        launch.parse_args(
            [
                "--config",
                config,
                "--prompt",
                "a photo of a pineapple",
                "--model",
                str(model),
                "--output",
                str(out),
                *TINY,
                *PAPER_SCALE_CUTS,
                *extra,
            ]
        )
    )


@pytest.mark.parametrize("name", ["sd15-fp16", "sd15-bin", "sd21-base", "sd21"])
def test_dreamfusion_on_each_layout(name, layouts, tmp_path):
    result = run("dreamfusion.yaml", layouts[name], tmp_path, "--steps", "2", "renderer.num_samples_per_ray=16")
    assert (tmp_path / "dreamfusion" / "a-photo-of-a-pineapple" / "export" / "model.glb").is_file()
    assert torch.isfinite(torch.tensor(result["last_loss"]))


def test_prolificdreamer_stages_on_sd21_v_prediction(layouts, tmp_path):
    # the LoRA on the prior's own UNet (the paper config's second model, SD 2.1, is tested beside 2.1-base below)
    run(
        "prolificdreamer.yaml",
        layouts["sd21"],
        tmp_path,
        PD_STAGES.replace("6", "2").replace("3", "1"),
        "guidance.lora_model=null",
    )
    run_dir = tmp_path / "prolificdreamer" / "a-photo-of-a-pineapple"
    for stage in ("nerf", "geometry", "texture"):
        assert (run_dir / "ckpts" / stage / "last.ckpt").is_file()


def test_prolificdreamer_lora_on_sd21_beside_sd21_base(layouts, tmp_path):
    """The paper's pairing: the pretrained score from 2.1-base, the LoRA trained on 2.1 (v-prediction)."""
    stages = (
        "stages=[{name: nerf, overrides: {trainer: {max_steps: 2}}}, {name: geometry, overrides: "
        "{representation: mesh, force_shading: normal, train_texture: false, guidance: {type: sds}, "
        "trainer: {max_steps: 1}}}, {name: texture, overrides: {representation: mesh, train_geometry: false, "
        "trainer: {max_steps: 1}}}]"
    )
    run("prolificdreamer.yaml", layouts["sd21-base"], tmp_path, stages, f"guidance.lora_model={layouts['sd21']}")
    run_dir = tmp_path / "prolificdreamer" / "a-photo-of-a-pineapple"
    assert (run_dir / "ckpts" / "texture" / "last.ckpt").is_file()
    assert "lora_model: " + str(layouts["sd21"]) in (run_dir / "config.yaml").read_text()


def test_magic3d_stages_on_sd15_bin(layouts, tmp_path):
    run("magic3d.yaml", layouts["sd15-bin"], tmp_path, M3_STAGES.replace("6", "2").replace("3", "1"))
    assert (tmp_path / "magic3d" / "a-photo-of-a-pineapple" / "ckpts" / "refine" / "last.ckpt").is_file()


@pytest.mark.parametrize(
    "name,kind,pad,prediction",
    [
        ("sd15-all", "sd15", "<|endoftext|>", "epsilon"),
        ("sd21-base", "sd21-base", "!", "epsilon"),
        ("sd21", "sd21", "!", "v_prediction"),
    ],
)
def test_prior_reads_each_layout(name, kind, pad, prediction, layouts):
    """What each layout must give the prior: the pad token its text encoder was trained with (SD 2's "!",
    not the end token), the scheduler's prediction type, text embeddings as wide as the UNet's
    cross-attention, and one finite guided epsilon; the full-width configs are the real ones."""
    from gen3d.diffusion.prior import load_prior
    from gen3d.diffusion.random_pipelines import configs

    prior = load_prior(str(layouts[name]))
    tok = prior.tokenizer
    assert tok.pad_token == pad and prior.prediction_type == prediction
    ids = tok(["a"], padding="max_length", max_length=tok.model_max_length).input_ids[0]
    assert ids[-1] == tok.convert_tokens_to_ids(pad) and len(ids) == 77
    emb = prior.encode_text(["a photo of a pineapple", ""])
    assert emb.shape[1:] == (77, prior.unet.config.cross_attention_dim)
    x = torch.randn(1, 4, prior.latent_size, prior.latent_size)
    eps = prior.predict_noise(x, torch.tensor([500]), emb[:1], emb[1:], 7.5)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    full = configs(kind, "full")
    text, unet = full["text_encoder"], full["unet"]
    vit = (768, 12, "quick_gelu") if kind == "sd15" else (1024, 23, "gelu")  # CLIP ViT-L / OpenCLIP ViT-H
    assert (text["hidden_size"], text["num_hidden_layers"], text["hidden_act"]) == vit
    assert unet["cross_attention_dim"] == text["hidden_size"] and unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["sample_size"] == (96 if kind == "sd21" else 64)


@pytest.mark.parametrize(
    "config,name",
    [
        ("tuneavideo", "sd15-fp16"),
        ("tuneavideo", "sd15-bin"),
        ("tuneavideo", "sd15-all"),
        ("tuneavideo", "sd21"),
        ("controlvideo", "sd15-fp16"),
        ("controlvideo", "sd21-base"),
    ],
)
def test_video_on_each_layout(config, name, layouts, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from gen3d.config import build_config, read_yaml, resolve_config_path
    from gen3d.diffusion.layout import folder_weights
    from gen3d.utils.media import write_video
    from video.config import VideoEditConfig
    from video.demo import moving_shape
    from video.run import run_video

    model = layouts[name]
    video = write_video(tmp_path / "in.gif", moving_shape(3, 64).permute(0, 2, 3, 1), fps=5)
    layer = {
        "model": str(model),
        "video": str(video),
        "prompt": "a blue sphere is moving",
        "edit": ["a red cube"],
        "output": str(tmp_path),
        "cache_dir": str(tmp_path / "cache"),
    }
    extra = [
        "trainer.max_steps=1",
        "trainer.checkpoint_every=1",
        "sampling.steps=2",
        "sampling.inversion_steps=2",
        "frames=2",
        "size=0",  # the per-device default: the layout's native size on the CPU
        "trainer.precision=auto",
        "trainer.gradient_checkpointing=false",
    ]
    if config == "controlvideo":  # a ControlNet of the prior's layout, as lllyasviel/sd-controlnet-canny holds it
        weights = folder_weights(model, "unet", prefer_fp16=False).load_kwargs()
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **weights)
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).save_pretrained(
            tmp_path / "canny"
        )
        extra.append(f"controlnet={tmp_path / 'canny'}")
    cfg = build_config(VideoEditConfig, read_yaml(resolve_config_path(config)), layer, extra)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_video(cfg, run_dir)
    assert (run_dir / "edit-0.mp4").stat().st_size > 0
    assert torch.isfinite(torch.tensor(result["last_loss"]))
    native = 96 if name == "sd21" else 64  # the reduced layouts' native size (latents 8x8, SD 2.1's 12x12)
    assert f"\nsize: {native}\n" in (run_dir / "config.yaml").read_text()


def test_controlnet_of_sd15_on_sd21_is_one_line(layouts, tmp_path, capsys):
    """A ControlNet made for SD 1.5 (768-d cross-attention) passed to an SD 2.1 prior (1024-d)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    from gen3d.utils.media import write_video
    from video.demo import moving_shape

    unet = UNet2DConditionModel.from_pretrained(layouts["sd15-bin"], subfolder="unet", use_safetensors=False)
    ControlNetModel.from_unet(unet).save_pretrained(tmp_path / "sd15-canny")
    video = write_video(tmp_path / "in.gif", moving_shape(3, 64).permute(0, 2, 3, 1), fps=5)
    args = ["--config", "controlvideo.yaml", "--model", str(layouts["sd21-base"]), "--video", str(video)]
    args += ["--prompt", "a blue sphere", "--edit", "a red cube", "--frames", "2", "--output", str(tmp_path / "o")]
    code = launch.main(args + ["--controlnet", str(tmp_path / "sd15-canny")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "cross_attention_dim is 48" in err and "has 64" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("config", ["dreamfusion.yaml", "tuneavideo.yaml"])
def test_folder_missing_unet_is_one_line(config, layouts, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(layouts["sd21-base"], broken)
    shutil.rmtree(broken / "unet")
    args = ["--config", config, "--prompt", "a pineapple", "--model", str(broken), "--output", str(tmp_path / "o")]
    if config == "tuneavideo.yaml":
        args += ["--video", str(tmp_path / "missing.mp4"), "--edit", "a red cube"]
    code = launch.main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "unet" in err, err
    assert not (tmp_path / "o").exists()
