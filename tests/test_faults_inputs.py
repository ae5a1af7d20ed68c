"""Bad input: one `error:` line, exit code 2, no traceback and nothing written, for every row of the
table in tests/fault_inputs.py; and the pieces behind it (ranges, literal user strings, --steps over
stages, the light error path, frames resized one at a time)."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import launch
from gen3d.cli import _flag_overrides
from gen3d.config import build_config, literal, ranged, read_yaml, resolve_config_path, to_yaml
from gen3d.errors import UserError
from gen3d.profiles import build_with_profile
from gen3d.systems.config import Text3DConfig
from gen3d.systems.stages import split_steps, stage_configs, with_steps
from tests.fault_inputs import CASES, REPO, cuda_available, make_fixtures, run_case


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    return work, make_fixtures(work)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, faults):
    if case.needs_no_cuda and cuda_available():
        pytest.skip("the input is valid on a machine with CUDA")
    work, paths = faults
    out = run_case(case, paths, work)
    assert not out.traceback, out.traceback
    assert "Traceback" not in out.stderr
    assert out.code == 2, out.stderr
    assert out.one_line, out.stderr
    assert case.expect in out.error_lines[0], out.error_lines[0]
    assert out.written == [], out.written


def test_table_covers_the_issue(faults):
    ids = " ".join(c.id for c in CASES)
    assert len(CASES) >= 30
    for key in ("camera.height=0", "trainer.precision", "guidance_scale=nan", "not UTF-8", "${nosuch}", "device"):
        assert key in ids


def test_env_interpolation_never_reaches_the_message(faults):
    work, paths = faults
    case = next(c for c in CASES if "oc.env" in c.id)
    out = run_case(case, paths, work)
    assert str(Path.home()) not in out.stderr.replace("${oc.env:home}", "")


def test_error_path_in_a_real_process_imports_no_heavy_stack(tmp_path):
    """A config error, a model error found by validate, and a video error: exit 2, and Lightning,
    diffusers, transformers and trimesh never imported (one process, the three in a row)."""
    out = str(tmp_path / "o")
    runs = [
        ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "camera.height=0"],
        ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", str(tmp_path / "no-model")],
        ["--config", "tuneavideo.yaml", "--prompt", "a cube", "--edit", "a red cube", "--video", "/no/such.mp4"],
    ]
    code = (
        "import sys, launch\n"
        f"for args in {runs!r}:\n"
        f"    rc = launch.main(args + ['--output', {out!r}])\n"
        "    print(rc, sorted(m for m in ('lightning', 'diffusers', 'transformers', 'trimesh') if m in sys.modules))\n"
    )
    (tmp_path / "no-model").mkdir()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.stdout.split("\n")[:3] == ["2 []"] * 3, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), proc.stderr
    assert "camera.height" in errors[0] and "model_index.json" in errors[1] and "does not exist" in errors[2]
    assert not (tmp_path / "o").exists()


def test_range_is_declared_with_the_field_and_reported():
    from dataclasses import dataclass, field
    from typing import Any

    @dataclass
    class Inner:
        p: Any = ranged(0.5, ge=0, le=1)
        SCHEDULES = ("p",)

    @dataclass
    class Outer:
        n: int = ranged(1, ge=1)
        mode: str = ranged("a", choices=("a", "b"))
        pair: tuple[float, float] = ranged((1.0, 2.0), gt=0)
        inner: Inner = field(default_factory=Inner)
        free: dict[str, Any] = field(default_factory=dict)

    assert build_config(Outer, ["n=3", "inner.p={milestones: [5], values: [0.2, 0.9]}"]).n == 3
    for override, message in [
        ("n=0", "'n' must be >= 1 (got 0)"),
        ("mode=c", "'mode' must be one of a, b (got 'c')"),
        ("pair=[1,-2]", "'pair' must be > 0 (got -2.0)"),
        ("inner.p=[0,0.5,2,10]", "'inner.p' must be in [0, 1] (got 2)"),
        ("inner.p={milestones: [5], values: [0.2, -1]}", "'inner.p' must be in [0, 1] (got -1)"),
        ("free={a: [1, .inf]}", "'free.a[1]' must be a finite number (got inf)"),
    ]:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            build_config(Outer, [override])


def test_user_strings_stay_literal_through_config_yaml_resume_and_stages():
    """S2: --prompt '${oc.env:HOME}' is data: the config, the run-directory slug, config.yaml and the
    config rebuilt from config.yaml on --resume all keep it as typed (and ${nosuch} is no error)."""
    from gen3d.utils.rundir import slugify

    for prompt in ("${oc.env:HOME}", "${nosuch}", "a \\${x} $ {y}"):
        args = launch.parse_args(["--config", "prolificdreamer.yaml", "--prompt", prompt])
        yaml_cfg = read_yaml(resolve_config_path(args.config))
        cfg = build_config(Text3DConfig, yaml_cfg, _flag_overrides(args, Text3DConfig))
        assert cfg.prompt == prompt
        assert slugify(cfg.prompt) == slugify(prompt)
        assert all(stage_cfg.prompt == prompt for _, stage_cfg in stage_configs(cfg))
        saved = __import__("yaml").safe_load(to_yaml(cfg))  # what config.yaml holds, read as --resume does
        assert saved["prompt"] == prompt
        assert build_config(Text3DConfig, literal(saved)).prompt == prompt
    from video.config import VideoEditConfig

    args = launch.parse_args(
        ["--config", "tuneavideo.yaml", "--edit", "${oc.env:HOME}", "--edit", "${a}", "--video", "${b}"]
    )
    cfg = build_config(
        VideoEditConfig, read_yaml(resolve_config_path(args.config)), _flag_overrides(args, VideoEditConfig)
    )
    assert cfg.edit == ["${oc.env:HOME}", "${a}"] and cfg.video == "${b}"


def test_steps_split_over_stages_in_proportion():
    assert split_steps(1100, [600, 200, 300]) == [600, 200, 300]
    assert split_steps(110, [600, 200, 300]) == [60, 20, 30]
    assert split_steps(10, [600, 200, 300]) == [5, 2, 3]  # largest remainders
    assert split_steps(2, [600, 200, 300]) == [1, 1, 1]  # every stage trains at least one step
    layer = {"prompt": "a red cube", "model": "builtin"}  # the builtin profile's stages: 600 / 200 / 300
    cfg = build_with_profile(Text3DConfig, read_yaml(resolve_config_path("prolificdreamer.yaml")), layer)
    steps = [s.trainer.max_steps for _, s in stage_configs(with_steps(cfg, 11))]
    assert steps == [6, 2, 3]
    single = build_config(Text3DConfig, read_yaml(resolve_config_path("dreamfusion.yaml")))
    assert with_steps(single, 7).trainer.max_steps == 7


def test_cli_applies_steps_to_every_stage(tmp_path, monkeypatch):
    """`--steps 2` reaches the stages of ProlificDreamer (it trained 600 steps in stage nerf before)."""
    seen = {}

    def fake_run(cfg, run_dir, resume=None, export_only=False, stage=None, from_run=None):
        seen["steps"] = [s.trainer.max_steps for _, s in stage_configs(cfg)]
        return {}

    monkeypatch.setattr("gen3d.systems.runner.run_text3d", fake_run)
    monkeypatch.setattr("gen3d.report.summary.finish_run", lambda run_dir: None)  # no run to report on
    from gen3d.cli import run_from_args

    root, handlers = logging.getLogger(), list(logging.getLogger().handlers)
    args = ["--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--steps", "12", "--output", str(tmp_path)]
    args += ["--model", "builtin"]  # the builtin profile's stages (600 / 200 / 300)
    try:
        run_from_args(launch.parse_args(args))
    finally:
        for h in set(root.handlers) - set(handlers):  # the run's log.txt handler
            root.removeHandler(h)
            h.close()
    assert seen["steps"] == [7, 2, 3]


def test_resume_without_path_keeps_the_override():
    args = launch.parse_args(["--config", "dreamfusion.yaml", "--resume", "trainer.max_steps=3", "seed=1"])
    assert args.resume == "latest" and args.overrides == ["trainer.max_steps=3", "seed=1"]


def test_video_frames_resized_one_at_a_time(tmp_path):
    """Large frames are cropped and resized before they become floats: same result as resizing the
    float stack (read_video's contract), with one full-size float frame at a time."""
    import imageio.v3 as iio
    import torch

    from video.io import crop_resize, read_video

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (60, 90, 3), dtype=np.uint8) for _ in range(3)]
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / f"{i:03d}.png", f)
    clip = read_video(tmp_path, frames=3, size=16)
    stack = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    assert clip.frames.shape == (3, 3, 16, 16) and clip.source_size == (60, 90)
    assert torch.allclose(clip.frames, crop_resize(stack, 16).clamp(0, 1), atol=1e-6)
