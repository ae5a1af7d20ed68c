"""Magic3D and ProlificDreamer stages chain end to end at tiny scale; --stage/--from/--particles."""

import pytest
import torch

import launch
from gen3d.cli import run_from_args
from tests.test_launch import assert_one_closed_component

TINY = [
    "camera.height=32",
    "camera.width=32",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "mesh.resolution=40",
    "trainer.preview_every=0",
    "prompt_processor.cache_dir=null",
]
PD_STAGES = (
    "stages=[{name: nerf, overrides: {trainer: {max_steps: 6}}}, "
    "{name: geometry, overrides: {representation: mesh, force_shading: normal, train_texture: false, "
    "guidance: {type: sds}, loss: {normal_consistency: 10.0, laplacian: 10.0}, trainer: {max_steps: 3}}}, "
    "{name: texture, overrides: {representation: mesh, train_geometry: false, trainer: {max_steps: 3}}}]"
)
M3_STAGES = (
    "stages=[{name: coarse, overrides: {trainer: {max_steps: 6}}}, "
    "{name: refine, overrides: {representation: mesh, camera: {height: 48, width: 48}, trainer: {max_steps: 3}}}]"
)
EXPORTS = ("model.obj", "model.mtl", "model.png", "model.glb")


def run(*args):
    return run_from_args(launch.parse_args(list(args)))


@pytest.fixture(scope="module")
def prolific_run(tiny_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("pd")
    result = run(
        "--config",
        "prolificdreamer.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(out),
        "--particles",
        "2",
        *TINY,
        PD_STAGES,
    )
    return out, result


def test_prolificdreamer_three_stages_two_particles(prolific_run):
    out, result = prolific_run
    run_dir = out / "prolificdreamer" / "a-red-cube"
    for stage in ("nerf", "geometry", "texture"):
        assert (run_dir / "ckpts" / stage / "last.ckpt").is_file()
    for i in range(2):
        for name in EXPORTS:
            assert (run_dir / "export" / f"particle-{i}" / name).is_file()
        assert (run_dir / "video" / f"turntable-{i}.mp4").is_file()
        assert_one_closed_component(run_dir / "export" / f"particle-{i}" / "model.glb")
    # the VSD LoRA is checkpointed, the frozen UNet is not
    state = torch.load(run_dir / "ckpts" / "texture" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("vsd_lora.") for k in state)
    assert not any(k.startswith(("unet.", "_prior")) or ".base_layer." in k for k in state)
    # geometry stage moved vertices only; texture stage kept them
    geo = torch.load(run_dir / "ckpts" / "geometry" / "last.ckpt", weights_only=True)["state_dict"]
    assert geo["scenes.0.geometry.offsets"].abs().sum() > 0
    assert torch.equal(geo["scenes.0.geometry.offsets"], state["scenes.0.geometry.offsets"])


def test_texture_stage_from_another_run(prolific_run, tiny_pipeline, tmp_path):
    out, _ = prolific_run
    src = out / "prolificdreamer" / "a-red-cube"
    result = run(
        "--config",
        "prolificdreamer.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        "--particles",
        "2",
        "--stage",
        "texture",
        "--from",
        str(src),
        *TINY,
        PD_STAGES,
    )
    run_dir = tmp_path / "prolificdreamer" / "a-red-cube"
    assert result["run_dir"] == str(run_dir)
    assert (run_dir / "ckpts" / "texture" / "last.ckpt").is_file()
    assert not (run_dir / "ckpts" / "nerf").exists()
    assert (run_dir / "export" / "particle-1" / "model.glb").is_file()


def test_magic3d_two_stages(tiny_pipeline, tmp_path):
    run(
        "--config",
        "magic3d.yaml",
        "--prompt",
        "a red cube",
        "--model",
        str(tiny_pipeline),
        "--output",
        str(tmp_path),
        *TINY,
        M3_STAGES,
    )
    run_dir = tmp_path / "magic3d" / "a-red-cube"
    assert (run_dir / "ckpts" / "coarse" / "last.ckpt").is_file() and (
        run_dir / "ckpts" / "refine" / "last.ckpt"
    ).is_file()
    for name in EXPORTS:
        assert (run_dir / "export" / name).is_file()
    assert_one_closed_component(run_dir / "export" / "model.glb")
    # export-only of a multi-stage run reloads the mesh stage
    assert launch.main(["--resume", str(run_dir), "--export-only"]) == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--particles", "0"], "config key 'particles' must be in [1, 256]"),
        (["--stage", "nope"], "unknown stage 'nope'"),
        (["--stage", "texture"], "needs the checkpoint of stage 'geometry'"),
        (["--stage", "texture", "--from", "/no/such/run"], "is not a gen3d run"),
    ],
)
def test_stage_errors(extra, message, tiny_pipeline, tmp_path, capsys):
    code = launch.main(
        [
            "--config",
            "prolificdreamer.yaml",
            "--prompt",
            "a red cube",
            "--model",
            str(tiny_pipeline),
            "--output",
            str(tmp_path),
            *extra,
        ]
    )
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "prolificdreamer").exists()


def test_from_run_of_another_method(prolific_run, tiny_pipeline, tmp_path, capsys):
    out, _ = prolific_run
    code = launch.main(
        [
            "--config",
            "magic3d.yaml",
            "--prompt",
            "a red cube",
            "--model",
            str(tiny_pipeline),
            "--output",
            str(tmp_path),
            "--stage",
            "refine",
            "--from",
            str(out / "prolificdreamer" / "a-red-cube"),
        ]
    )
    assert code == 2 and "is a 'prolificdreamer' run, not 'magic3d'" in capsys.readouterr().err
