"""Prior profiles (gen3d.profiles): method configs are paper scale on Stable Diffusion; the builtin profile
restores the CPU settings; the profile in force is in config.yaml and the log; render size and batch size
follow step schedules and a resumed run continues at the scheduled size."""

import json
import re
import shutil
from pathlib import Path

import pytest

import launch
from gen3d.config import read_yaml, resolve_config_path
from gen3d.errors import UserError
from gen3d.profiles import build_with_profile, profile_line, profile_name
from gen3d.systems.config import Text3DConfig
from gen3d.systems.stages import stage_configs
from video.config import VideoEditConfig

TINY = [
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=16",
    "trainer.preview_every=0",
    "trainer.log_every=1",
    "prompt_processor.cache_dir=null",
    "renderer.num_samples_per_ray=16",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
]


def resolve(config, *layers, schema=Text3DConfig, resolved=False):
    return build_with_profile(schema, read_yaml(resolve_config_path(config)), *layers, resolved=resolved)


def test_auto_profile_follows_the_model(tiny_pipeline, tmp_path):
    from gen3d.diffusion.random_pipelines import write_pipeline

    sd = write_pipeline("sd21-base", tmp_path / "sd21-base")
    assert profile_name("auto", "builtin") == "builtin"
    assert profile_name("auto", str(tiny_pipeline)) == "builtin"  # a pipeline of the builtin kind
    assert profile_name("auto", str(sd)) == "sd"
    assert profile_name("auto", "stabilityai/stable-diffusion-2-1-base") == "sd"  # decided without the hub
    assert profile_name("builtin", str(sd)) == "builtin"
    from gen3d.prior.tokenizer import MODEL_MAX_LENGTH
    from gen3d.profiles import BUILTIN_MAX_LENGTH

    assert BUILTIN_MAX_LENGTH == MODEL_MAX_LENGTH
    with pytest.raises(UserError, match="unknown prior profile 'tiny'.*builtin, sd"):
        profile_name("tiny", "builtin")


def test_paper_scale_by_default_and_builtin_restores_the_cpu_settings():
    paper = resolve("dreamfusion.yaml")
    assert (paper.profile, paper.model) == ("sd", "stabilityai/stable-diffusion-2-1-base")
    assert (paper.trainer.max_steps, paper.guidance.guidance_scale, paper.geometry.hash_grid.n_levels) == (
        10000,
        100,
        16,
    )
    assert paper.background.type == "mlp" and paper.renderer.num_samples_per_ray == 512
    cpu = resolve("dreamfusion.yaml", {"model": "builtin"})
    assert cpu.profile == "builtin" and cpu.model == "builtin"
    assert (cpu.trainer.max_steps, cpu.guidance.guidance_scale, cpu.geometry.hash_grid.n_levels) == (600, 20, 8)
    assert cpu.background.type == "solid" and cpu.camera.height == 64 and cpu.renderer.num_samples_per_ray == 48
    # the command line wins over the profile
    assert resolve("dreamfusion.yaml", {"model": "builtin"}, ["trainer.max_steps=7"]).trainer.max_steps == 7

    pd = dict(stage_configs(resolve("prolificdreamer.yaml")))
    assert pd["nerf"].camera.height == {"milestones": [5000], "values": [64, 512]}
    assert pd["nerf"].guidance.lora_model is None  # the default stays shared (issue 12)
    assert pd["nerf"].guidance.lora_lr == 1e-4 and pd["nerf"].loss.sparsity == 10
    assert [pd[s].trainer.max_steps for s in ("nerf", "geometry", "texture")] == [25000, 15000, 30000]
    assert pd["geometry"].camera.height == 512 and pd["geometry"].guidance.type == "sds"
    pd_cpu = dict(stage_configs(resolve("prolificdreamer.yaml", {"model": "builtin"})))
    assert pd_cpu["nerf"].camera.height == 64 and pd_cpu["nerf"].guidance.lora_model is None
    assert [pd_cpu[s].trainer.max_steps for s in ("nerf", "geometry", "texture")] == [600, 200, 300]

    video = resolve("controlvideo.yaml", schema=VideoEditConfig)
    assert (video.model, video.controlnet, video.size, video.trainer.lr) == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "lllyasviel/sd-controlnet-canny",
        0,  # the native 512 px on CUDA (video/config.py's per-device default)
        3e-5,
    )
    video_cpu = resolve("controlvideo.yaml", {"model": "builtin"}, schema=VideoEditConfig)
    assert (video_cpu.controlnet, video_cpu.size, video_cpu.trainer.max_steps) == (None, 0, 300)


def test_a_resolved_config_is_not_profiled_again():
    """--resume RUN_DIR without --config reads the run's config.yaml: the profile is not applied over it."""
    saved = {
        "system": "text3d",
        "name": "dreamfusion",
        "model": "builtin",
        "profile": "builtin",
        "camera": {"height": 32},
    }
    assert build_with_profile(Text3DConfig, saved, resolved=True).camera.height == 32
    assert build_with_profile(Text3DConfig, saved).camera.height == 64  # (what re-applying would do)
    older = build_with_profile(Text3DConfig, {**saved, "profile": "auto"}, resolved=True)  # a run from before
    assert older.camera.height == 32 and profile_line(older) == "profile: auto (the run's config.yaml as it is)"


@pytest.fixture
def info_logs():
    """gen3d's INFO lines reach the run's log.txt, as under launch.py."""
    import logging

    logger = logging.getLogger("gen3d")
    old, handlers = logger.level, list(logging.getLogger().handlers)
    logger.setLevel(logging.INFO)

    def close_run_logs():  # the log.txt handlers the runs added (one per run in this process)
        for handler in [h for h in logging.getLogger().handlers if h not in handlers]:
            logging.getLogger().removeHandler(handler)
            handler.close()

    yield close_run_logs
    close_run_logs()
    logger.setLevel(old)


def test_run_names_its_profile_in_config_and_log(tiny_pipeline, tmp_path, info_logs):
    from gen3d.cli import run_from_args

    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    args += ["--steps", "1", "--output", str(tmp_path), "camera.height=16", "camera.width=16", *TINY]
    run_dir = Path(run_from_args(launch.parse_args(args))["run_dir"])
    assert read_yaml(run_dir / "config.yaml")["profile"] == "builtin"
    lines = [line.split(" ", 2)[-1] for line in (run_dir / "log.txt").read_text().splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("run directory:"))
    assert lines[first + 1].startswith("profile: builtin (configs/profiles/builtin/dreamfusion.yaml)")


def test_default_model_missing_is_the_download_message(capsys, tmp_path):
    """With Stable Diffusion as the default, a prompt outside the builtin vocabulary is no vocabulary error:
    offline, the user gets the download message, naming both ways forward."""
    code = launch.main(["--config", "prolificdreamer.yaml", "--prompt", "a pineapple", "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert "stabilityai/stable-diffusion-2-1-base" in err and "--model builtin" in err and "pineapple" not in err
    assert not (tmp_path / "o").exists()


SIZE_LINE = re.compile(r"renders (\d+)x(\d+) px, batch (\d+) \(from step (\d+)\)")


def sizes(run_dir):
    return [
        tuple(map(int, m.groups())) for m in map(SIZE_LINE.search, (run_dir / "log.txt").read_text().splitlines()) if m
    ]


def test_resolution_and_batch_schedules_resume_at_the_scheduled_size(tiny_pipeline, tmp_path, info_logs):
    """camera.height/width 16 -> 24 px and the batch 2 -> 1 at step 2; resumed from the step-1 checkpoint,
    the run continues at 16 px for step 1 and switches at step 2, as the uninterrupted run did."""
    from gen3d.cli import run_from_args

    sched = ["camera.height={milestones: [2], values: [16, 24]}", "camera.width={milestones: [2], values: [16, 24]}"]
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline), "--steps", "3"]
    args += ["--output", str(tmp_path), *TINY, *sched, "trainer.batch_size={milestones: [2], values: [2, 1]}"]
    run_dir = Path(run_from_args(launch.parse_args(args + ["trainer.checkpoint_every=1"]))["run_dir"])
    assert sizes(run_dir) == [(16, 16, 2, 0), (24, 24, 1, 2)]
    saved = read_yaml(run_dir / "config.yaml")
    assert saved["camera"]["height"] == {"milestones": [2], "values": [16, 24]}

    ckpt = run_dir / "ckpts" / "step-000001.ckpt"
    assert ckpt.is_file()
    (run_dir / "ckpts" / "last.ckpt").unlink()
    info_logs()
    (run_dir / "log.txt").write_text("")
    run_from_args(launch.parse_args(["--resume", str(ckpt)]))
    assert sizes(run_dir) == [(16, 16, 2, 1), (24, 24, 1, 2)]


GUIDANCE_SCALE_LINE = re.compile(r"guidance\.guidance_scale = ([\d.]+) \(from step (\d+)")


def test_any_stepped_value_follows_a_step_schedule_and_resumes_across_its_milestone(tiny_pipeline, tmp_path, info_logs):
    """guidance.guidance_scale (a float field, not a schedule-typed one) 100 -> 5 at step 2: config.yaml keeps
    the schedule, the log names the switch, and a run resumed from the step-2 checkpoint starts at 5."""
    from gen3d.cli import run_from_args

    sched = "guidance.guidance_scale={milestones: [2], values: [100, 5]}"
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline), "--steps", "3"]
    run_dir = Path(
        run_from_args(
            launch.parse_args(args + ["--output", str(tmp_path), *TINY, sched, "trainer.checkpoint_every=1"])
        )["run_dir"]
    )
    switches = [
        m.groups() for m in map(GUIDANCE_SCALE_LINE.search, (run_dir / "log.txt").read_text().splitlines()) if m
    ]
    assert switches == [("5.0", "2")]
    assert read_yaml(run_dir / "config.yaml")["guidance"]["guidance_scale"] == {
        "milestones": [2],
        "values": [100.0, 5.0],
    }

    (run_dir / "ckpts" / "last.ckpt").unlink()
    info_logs()
    (run_dir / "log.txt").write_text("")
    run_from_args(launch.parse_args(["--resume", str(run_dir / "ckpts" / "step-000002.ckpt")]))
    switches = [
        m.groups() for m in map(GUIDANCE_SCALE_LINE.search, (run_dir / "log.txt").read_text().splitlines()) if m
    ]
    assert switches == [("5.0", "2")]


def test_the_parts_read_the_live_value_of_a_scheduled_key(tiny_pipeline):
    """The guidance and the renderer share the system's live config: a step moves what they read."""
    from gen3d.config import apply_step
    from gen3d.diffusion.prior import load_prior
    from gen3d.systems.text3d import Text3DSystem

    cfg = resolve(
        "dreamfusion.yaml",
        ["model=builtin", "prompt=a red cube", *TINY],
        ["guidance.guidance_scale={milestones: [10], values: [100, 7.5]}"],
        ["renderer.shading.ambient={milestones: [10], values: [0.1, 0.4]}"],
    )
    system = Text3DSystem(cfg, prior=load_prior(str(tiny_pipeline)))
    system.setup_prior("cpu")
    assert system._guidance.cfg.guidance_scale == 100.0 and system.scene(0).cfg.shading.ambient == 0.1
    assert apply_step(system.cfg, system.step_schedules, 10) == {
        "guidance.guidance_scale": 7.5,
        "renderer.shading.ambient": 0.4,
    }
    assert system._guidance.cfg.guidance_scale == 7.5 and system.scene(0).cfg.shading.ambient == 0.4
    assert cfg.guidance.guidance_scale == {"milestones": [10], "values": [100.0, 7.5]}  # the spec is kept


@pytest.mark.parametrize(
    "override, words",
    [
        (
            "geometry.hash_grid.n_levels={milestones: [10], values: [4, 8]}",
            "'geometry.hash_grid.n_levels' cannot follow a schedule",
        ),
        (
            "guidance.guidance_scale={milestones: [10], values: [7.5, -1]}",
            "'guidance.guidance_scale' must be >= 0 (got -1",
        ),
        ("guidance.guidance_scale={milestones: [10], values: [7.5, big]}", "schedule value 'big'"),
        ("guidance.weighting={milestones: [10, 5], values: [sds, uniform, sds]}", "strictly increasing"),
        ("optimizer.lr={milestones: [10], values: [0.01, 0.001]}", "keys of 'optimizer' that can: none"),
        ("camera.height={milestones: [300, 100], values: [64, 128, 512]}", "strictly increasing"),
        ("camera.width={milestones: [10], values: [64, 0]}", "'camera.width' must be in [8, 8192] (got 0)"),
        ("trainer.batch_size={milestones: [10, 10], values: [1, 2, 3]}", "strictly increasing"),
        ("guidance.resolution=100", "multiple of 8"),
    ],
)
def test_bad_schedules_are_one_line_exit_2(override, words, tiny_pipeline, tmp_path, capsys):
    args = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    code = launch.main(args + ["--output", str(tmp_path / "o"), override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and err.count("\n") == 0, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("prolificdreamer.yaml", "guidance.image_weight=100", "not available with guidance type 'vsd'"),
        ("dreamfusion.yaml", "rgb_as_latents=true guidance.image_weight=100", "needs RGB renders"),
        ("dreamfusion.yaml", "guidance.image_weight=-1", "'guidance.image_weight' must be >= 0"),
    ],
)
def test_image_weight_where_it_cannot_work_is_one_line_exit_2(config, override, words, tiny_pipeline, tmp_path, capsys):
    args = ["--config", config, "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    code = launch.main(args + ["--output", str(tmp_path / "o"), *override.split()])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and err.count("\n") == 0, err
    assert not (tmp_path / "o").exists()


def test_lora_model_with_another_latent_shape_is_one_line(tiny_pipeline, tmp_path, capsys):
    other = tmp_path / "eight-channels"
    shutil.copytree(tiny_pipeline, other)
    config = other / "unet" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "in_channels": 8}))
    args = ["--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--model", str(tiny_pipeline)]
    code = launch.main(args + ["--output", str(tmp_path / "o"), f"guidance.lora_model={other}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "latent shape" in err and "(8, 4)" in err, err
    assert not (tmp_path / "o").exists()
