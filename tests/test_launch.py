"""launch.py end to end on a tiny random pipeline, and its handling of bad input."""

import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

import launch

TINY = [
    "camera.height=32",
    "camera.width=32",
    "renderer.num_samples_per_ray=32",
    "export.resolution=48",
    "export.texture_size=64",
    "turntable.n_views=4",
    "turntable.resolution=32",
    "trainer.preview_every=100",
    "trainer.checkpoint_every=100",
    "prompt_processor.cache_dir=null",
]


def run(args, capsys=None):
    code = launch.main(args)
    err = capsys.readouterr().err if capsys else ""
    return code, err


def assert_one_closed_component(glb):
    """The exported asset is one watertight component (gen3d.quality.topology)."""
    from gen3d.quality import load_asset, topology

    t = topology(load_asset(glb)[0])
    assert t["components"] == 1 and t["watertight"], t


def test_dreamfusion_end_to_end(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "outputs"
    args = [
        "--config",
        "dreamfusion.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--steps",
        "200",
        "--output",
        str(out),
        *TINY,
    ]
    from gen3d.cli import run_from_args

    result = run_from_args(launch.parse_args(args))
    run_dir = out / "dreamfusion" / "a-red-cube"
    assert Path(result["run_dir"]) == run_dir
    for rel in [
        "config.yaml",
        "log.txt",
        "ckpts/last.ckpt",
        "previews/step-000100.png",
        "video/turntable.mp4",
        "export/model.obj",
        "export/model.mtl",
        "export/model.png",
        "export/model.glb",
    ]:
        assert (run_dir / rel).is_file(), rel
    mesh = trimesh.load(run_dir / "export" / "model.obj", force="mesh")
    assert len(mesh.faces) > 0
    assert_one_closed_component(run_dir / "export" / "model.glb")
    assert result["first_loss"] != pytest.approx(result["last_loss"])
    ckpt_keys = __import__("torch").load(run_dir / "ckpts" / "last.ckpt", weights_only=True)["state_dict"].keys()
    assert not any("unet" in k or "text_encoder" in k or "vae" in k for k in ckpt_keys)  # frozen prior not saved

    # the same prompt again does not overwrite: a -1 directory
    code, _ = run(args[: -len(TINY)] + TINY + ["trainer.max_steps=2"], capsys)
    assert code == 0 and (out / "dreamfusion" / "a-red-cube-1" / "export" / "model.glb").is_file()

    # resume the first run for more steps, then export only
    code, _ = run(["--resume", str(run_dir), "--steps", "210"], capsys)
    assert code == 0
    assert (run_dir / "ckpts" / "last.ckpt").is_file()
    code, _ = run(["--resume", str(run_dir), "--export-only"], capsys)
    assert code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "nope.yaml", "--prompt", "a red cube"], "config file 'nope.yaml' not found"),
        (
            ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "guidance.scale=3"],
            "unknown config key 'guidance.scale'",
        ),
        (
            ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "trainer.max_steps=abc"],
            "config key 'trainer.max_steps'",
        ),
        (["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", "/no/such/model"], "not found"),
        (
            ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", "someone/uncached-model"],
            "not in the Hugging Face cache",
        ),
        (
            ["--config", "magic3d.yaml", "--prompt", "a red cube", "mesh.albedo_smooth_points=-5"],
            "mesh.albedo_smooth_points",
        ),
        (["--config", "magic3d.yaml", "--prompt", "a red cube", "loss.albedo_smooth=-1"], "loss.albedo_smooth"),
        (["--config", "dreamfusion.yaml", "--prompt", "  "], "prompt is empty"),
        (["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--resume", "/no/such/run"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, capsys, tmp_path, tiny_pipeline):
    if "--model" not in args:
        args = args + ["--model", str(tiny_pipeline)]
    code, err = run(args + ["--output", str(tmp_path / "o")], capsys)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0
    assert not (tmp_path / "o").exists()  # nothing written


def test_unwritable_output(tmp_path, capsys, tiny_pipeline):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run(
        [
            "--config",
            "dreamfusion.yaml",
            "--prompt",
            "a red cube",
            "--model",
            str(tiny_pipeline),
            "--output",
            str(blocker / "sub"),
        ],
        capsys,
    )
    assert code == 2 and "not writable" in err
    assert blocker.read_text() == "x"


def test_builtin_prior_rejects_unknown_words(capsys):
    from gen3d.diffusion.prior import BUILTIN_PRIOR

    if not (BUILTIN_PRIOR / "model_index.json").is_file():
        pytest.skip("builtin prior not shipped in this checkout")
    code, err = run(["--config", "dreamfusion.yaml", "--prompt", "a pineapple", "--model", "builtin"], capsys)
    assert code == 2 and "pineapple" in err and "knows" in err


def test_cli_exit_code_in_a_real_process(tmp_path):
    proc = subprocess.run(
        [sys.executable, "launch.py", "--config", "missing.yaml"],
        capture_output=True,
        text=True,
        cwd=Path(launch.__file__).parent,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: config file 'missing.yaml' not found")


def test_overrides_may_come_before_between_and_after_flags():
    args = launch.parse_args(
        [
            "trainer.max_steps=3",
            "--config",
            "dreamfusion.yaml",
            "seed=4",
            "--edit",
            "a",
            "--edit",
            "b",
            "guidance.guidance_scale=5",
        ]
    )
    assert args.config == "dreamfusion.yaml" and args.edit == ["a", "b"]
    assert args.overrides == ["trainer.max_steps=3", "seed=4", "guidance.guidance_scale=5"]
