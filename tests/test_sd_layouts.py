"""Every method's stage chain, a few steps, on random-weight pipelines in Stable Diffusion's real layouts.

SD 1.5 (safety_checker / feature_extractor in model_index.json; fp16-variant files only, or .bin only),
SD 2.1-base (OpenCLIP ViT-H text encoder shape, pad token "!"), SD 2.1 (v-prediction DDIM config); widths
reduced (gen3d.diffusion.random_pipelines), the configs' keys real.
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
            ("sd21-base", "sd21-base", "safetensors"),
            ("sd21", "sd21", "safetensors"),
        ]
    }


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
    run("prolificdreamer.yaml", layouts["sd21"], tmp_path, PD_STAGES.replace("6", "2").replace("3", "1"))
    run_dir = tmp_path / "prolificdreamer" / "a-photo-of-a-pineapple"
    for stage in ("nerf", "geometry", "texture"):
        assert (run_dir / "ckpts" / stage / "last.ckpt").is_file()


def test_magic3d_stages_on_sd15_bin(layouts, tmp_path):
    run("magic3d.yaml", layouts["sd15-bin"], tmp_path, M3_STAGES.replace("6", "2").replace("3", "1"))
    assert (tmp_path / "magic3d" / "a-photo-of-a-pineapple" / "ckpts" / "refine" / "last.ckpt").is_file()


@pytest.mark.parametrize("config", ["tuneavideo", "controlvideo"])
def test_video_on_sd15_fp16(config, layouts, tmp_path):
    from diffusers import ControlNetModel, UNet2DConditionModel

    from gen3d.config import build_config, read_yaml, resolve_config_path
    from gen3d.utils.media import write_video
    from video.config import VideoEditConfig
    from video.demo import moving_shape
    from video.run import run_video

    model = layouts["sd15-fp16"]
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
    ]
    if config == "controlvideo":  # a ControlNet of the SD 1.5 layout, as lllyasviel/sd-controlnet-canny holds it
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", variant="fp16")
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)).save_pretrained(
            tmp_path / "canny"
        )
        extra.append(f"controlnet={tmp_path / 'canny'}")
    cfg = build_config(VideoEditConfig, read_yaml(resolve_config_path(config)), layer, extra)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_video(cfg, run_dir)
    assert (run_dir / "edit-0.mp4").stat().st_size > 0


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
