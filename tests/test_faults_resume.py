"""Checkpoints and resumes under faults (issue 14): atomic writes, unloadable and hostile checkpoints,
one lineage per run, failed resumes that change nothing, colliding prompts, the NaN stop, Ctrl-C,
kills at several points (SIGKILL in child processes), a full disk, links out of a run, SLURM markers."""

import os
import pickle
import shutil
import signal
import subprocess

import pytest
import torch

import launch
from bench import fault_kills
from gen3d.errors import UserError
from gen3d.reliability import checkpoint_io
from gen3d.reliability.checkpoints import newest_state
from gen3d.utils import distributed, rundir

STEPS = fault_kills.STEPS  # 6, a checkpoint every 2 steps


def args_for(model, out, *extra, steps=STEPS):
    return fault_kills.run_args(str(model), out, steps, extra)


def run(argv, capsys):
    code = launch.main([str(a) for a in argv])
    return code, capsys.readouterr().err.strip()


def one_error_line(code, err, needle, after_start=False):
    """after_start: the run had started (model-loading and step progress bars may precede the error line,
    on its own line or, for an unfinished bar, on the same one)."""
    assert code == 2, err
    line = err[err.rindex("error: ") :] if after_start and "error: " in err else err
    assert line.count("\n") == 0 and line.startswith("error: ") and needle in line, err


def ctrl_c_in_step(module_cls, at: int, monkeypatch):
    """Patch module_cls.training_step to send this process SIGINT in step `at`; returns the original."""
    step = module_cls.training_step

    def interrupting(self, batch, batch_idx):
        if self.global_step == at:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(module_cls, "training_step", interrupting)
    return step


@pytest.fixture(scope="module")
def base_run(tiny_pipeline, tmp_path_factory):
    """A finished tiny DreamFusion run: step-000002, -000004, -000006 and last.ckpt."""
    out = tmp_path_factory.mktemp("base")
    assert launch.main(args_for(tiny_pipeline, out)) == 0
    return out / "dreamfusion" / "a-red-cube"


@pytest.fixture
def run_copy(base_run, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(base_run, dest)  # hard links become copies: each file on its own
    return dest


def test_checkpoint_layout_is_one_lineage(base_run):
    names = sorted(p.name for p in (base_run / "ckpts").iterdir())
    assert names == ["last.ckpt", "step-000002.ckpt", "step-000004.ckpt", "step-000006.ckpt"]
    assert os.path.samefile(base_run / "ckpts" / "last.ckpt", base_run / "ckpts" / "step-000006.ckpt")


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "step-000001.ckpt"
    checkpoint_io.write_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 1}, path)

    def disk_full(tmp, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "SAVE_HOOKS", [disk_full])
    with pytest.raises(UserError, match="No space left on device"):
        checkpoint_io.write_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert checkpoint_io.read_checkpoint(path)["global_step"] == 1


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unloadable_checkpoints_are_skipped(run_copy, damage, capsys, caplog):
    ckpts = run_copy / "ckpts"
    for name in ("last.ckpt", "step-000006.ckpt"):
        data = (ckpts / name).read_bytes()
        new = {"truncated": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage]
        (ckpts / name).write_bytes(new)
    assert newest_state(ckpts).path.name == "step-000004.ckpt"
    code, err = run(["--resume", run_copy], capsys)
    assert code == 0, err
    assert "skipping checkpoint" in caplog.text
    assert checkpoint_io.read_checkpoint(ckpts / "last.ckpt")["global_step"] == STEPS


def test_no_loadable_checkpoint_is_one_line(run_copy, capsys):
    before = (run_copy / "config.yaml").read_bytes()
    for p in (run_copy / "ckpts").iterdir():
        p.write_bytes(b"not a checkpoint")
    code, err = run(["--resume", run_copy], capsys)
    one_error_line(code, err, "loads")
    code, err = run(["--resume", run_copy / "ckpts" / "step-000002.ckpt"], capsys)
    one_error_line(code, err, "does not load")
    assert (run_copy / "config.yaml").read_bytes() == before


class _Hostile:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_hostile_pickle_never_runs(run_copy, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for p in (run_copy / "ckpts").iterdir():
        p.unlink()
    with open(run_copy / "ckpts" / "last.ckpt", "wb") as f:
        pickle.dump({"state_dict": _Hostile()}, f)
    code, err = run(["--resume", run_copy], capsys)
    one_error_line(code, err, "loads")
    assert not (tmp_path / "pwned").exists()


def test_foreign_method_checkpoint_is_one_line(run_copy, capsys):
    for p in (run_copy / "ckpts").iterdir():
        p.unlink()
    foreign = {"state_dict": {"model.down_blocks.0.attn1.to_q.weight": torch.zeros(4, 4)}, "global_step": 3}
    torch.save(foreign, run_copy / "ckpts" / "last.ckpt")
    code, err = run(["--resume", run_copy], capsys)
    one_error_line(code, err, "another method")


def test_resume_from_an_older_step_does_not_fork(run_copy, capsys):
    ckpts = run_copy / "ckpts"
    code, err = run(["--resume", ckpts / "step-000002.ckpt", "--export-only"], capsys)
    one_error_line(code, err, "newest state")
    code, err = run(["--resume", ckpts / "step-000002.ckpt"], capsys)
    assert code == 0, err
    names = ["last.ckpt", "step-000002.ckpt", "step-000004.ckpt", "step-000006.ckpt"]
    assert sorted(p.name for p in ckpts.iterdir()) == names  # no last-v1.ckpt / step-*-v1.ckpt
    archived = list((run_copy / "archive").glob("*/ckpts/*.ckpt"))
    assert sorted(p.name for p in archived) == ["last.ckpt", "step-000004.ckpt", "step-000006.ckpt"]
    assert os.path.samefile(ckpts / "last.ckpt", ckpts / "step-000006.ckpt")
    assert newest_state(ckpts).step == STEPS


def test_failed_resume_changes_nothing(run_copy, capsys):
    before = (run_copy / "config.yaml").read_bytes()
    log_before = (run_copy / "log.txt").read_bytes()
    code, err = run(["--resume", run_copy, "geometry.mlp_hidden=16"], capsys)
    one_error_line(code, err, "does not fit")
    assert (run_copy / "config.yaml").read_bytes() == before
    assert (run_copy / "log.txt").read_bytes() == log_before
    code, err = run(["--resume", run_copy, "--export-only"], capsys)
    assert code == 0, err


def test_colliding_prompts_get_their_own_runs(tmp_path):
    base = tmp_path / "dreamfusion"
    first = rundir.new_run_dir(tmp_path, "dreamfusion", "A red cube!")
    (first / "config.yaml").write_text("prompt: A red cube!\n")
    other = rundir.new_run_dir(tmp_path, "dreamfusion", "a red cube")
    (other / "config.yaml").write_text("prompt: a red cube\n")
    again = rundir.new_run_dir(tmp_path, "dreamfusion", "a red cube")
    (again / "config.yaml").write_text("prompt: a red cube\n")
    assert first.name == "a-red-cube" and other.name == f"a-red-cube-{rundir.prompt_hash('a red cube')}"
    assert again.name == other.name + "-1"
    assert rundir.runs_of_prompt(base, "A red cube!") == [first]
    assert sorted(rundir.runs_of_prompt(base, "a red cube")) == sorted([other, again])
    long = "x" * 60
    assert rundir.runs_of_prompt(base, long + " one") == []


def test_resume_latest_never_continues_another_prompt(base_run, tiny_pipeline, capsys):
    out = base_run.parents[1]
    code, err = run(["--config", "dreamfusion.yaml", "--prompt", "A red cube!", "--output", out, "--resume"], capsys)
    one_error_line(code, err, "no run found")


def test_nan_stop_keeps_the_last_good_checkpoint(tiny_pipeline, tmp_path, capsys, monkeypatch):
    from gen3d.guidance.sds import SDSGuidance

    finish = SDSGuidance.finish

    def poisoned(self, latents, grad, step):
        return finish(self, latents, grad * float("nan") if step >= 2 else grad, step)

    monkeypatch.setattr(SDSGuidance, "finish", poisoned)
    code, err = run(args_for(tiny_pipeline, tmp_path, "trainer.max_bad_steps=3", steps=8), capsys)
    one_error_line(code, err, "trainer.max_bad_steps=3", after_start=True)
    assert err.endswith("step-000002.ckpt")
    ckpts = tmp_path / "dreamfusion" / "a-red-cube" / "ckpts"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-000002.ckpt"]


def test_ctrl_c_saves_exits_130_and_resumes_exactly(base_run, tiny_pipeline, tmp_path, capsys, monkeypatch):
    from gen3d.systems.text3d import Text3DSystem

    step = ctrl_c_in_step(Text3DSystem, 2, monkeypatch)
    code, err = run(args_for(tiny_pipeline, tmp_path), capsys)
    run_dir = tmp_path / "dreamfusion" / "a-red-cube"
    assert code == 130 and err.splitlines()[-1].startswith("interrupted at step 3 "), err
    assert err.endswith(f"resume with: python launch.py --resume {run_dir}"), err
    assert checkpoint_io.read_checkpoint(run_dir / "ckpts" / "step-000003.ckpt")["global_step"] == 3  # step saved
    monkeypatch.setattr(Text3DSystem, "training_step", step)
    code, err = run(["--resume", run_dir], capsys)
    assert code == 0, err
    ok, why = fault_kills.same_result(run_dir, base_run)  # same weights and mesh as never interrupted
    assert ok, why


def test_resumed_cameras_continue(base_run):
    from gen3d.render.cameras import CameraConfig
    from gen3d.systems.data import RandomCameraDataset

    full = RandomCameraDataset(CameraConfig(), length=8, seed=3)
    resumed = RandomCameraDataset(CameraConfig(), length=8, seed=3, start=5)
    assert torch.equal(full[5]["c2w"], resumed[0]["c2w"]) and not torch.equal(full[0]["c2w"], resumed[0]["c2w"])


def test_sigkill_mid_step_and_inside_a_save_then_resume(tmp_path):
    """Child processes killed with SIGKILL; the resumed runs end with the uninterrupted run's weights and mesh."""
    model = fault_kills.tiny_model(tmp_path)
    ref = fault_kills.reference(tmp_path, model)
    for name, kill, expect in fault_kills.KILLS[:2]:
        ok, why = fault_kills.try_kill(tmp_path, model, ref, name, kill, expect)
        assert ok, f"{name}: {why}"


def test_full_disk_leaves_only_complete_checkpoints(base_run, tiny_pipeline, tmp_path, capsys):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        steps = 2 * (2 * 2**20) // (base_run / "ckpts" / "last.ckpt").stat().st_size + 4  # twice what fits
        code, err = run(args_for(tiny_pipeline, mnt, "trainer.checkpoint_every=1", steps=steps), capsys)
        one_error_line(code, err, "No space left on device", after_start=True)
        assert err[err.rindex("error: ") :].startswith("error: cannot write checkpoint")
        files = list((mnt / "dreamfusion" / "a-red-cube" / "ckpts").iterdir())
        assert files and all(not p.name.startswith(".") for p in files)  # no temporary file left behind
        for p in files:
            checkpoint_io.read_checkpoint(p)  # every checkpoint under its final name loads
    finally:
        import logging

        for handler in [h for h in logging.getLogger().handlers if str(mnt) in getattr(h, "baseFilename", "")]:
            logging.getLogger().removeHandler(handler)  # launch.py's log.txt handler holds the mount busy
            handler.close()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_links_out_of_a_run_are_refused(run_copy, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.rmtree(run_copy / "export")
    (run_copy / "export").symlink_to(outside, target_is_directory=True)
    code, err = run(["--resume", run_copy, "--export-only"], capsys)
    one_error_line(code, err, "outside the run directory")
    assert list(outside.iterdir()) == []


def test_slurm_marker_is_per_step_fresh_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    for key in ("RANK", "TORCHELASTIC_RUN_ID", distributed.RUN_DIR_ENV):
        monkeypatch.delenv(key, raising=False)
    distributed.share_run_dir(tmp_path / "run-a", tmp_path)
    assert (tmp_path / ".job-77.0").read_text() == str(tmp_path / "run-a")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.delenv(distributed.RUN_DIR_ENV)
    monkeypatch.setenv("SLURM_STEP_ID", "1")  # a later srun step of the same allocation
    assert distributed.inherited_run_dir(tmp_path, timeout_s=0.6).name.startswith("gen3d-rank1-")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    os.utime(tmp_path / ".job-77.0", (1, 1))  # written long before this process started: stale
    assert distributed.inherited_run_dir(tmp_path, timeout_s=0.6).name.startswith("gen3d-rank1-")
    os.utime(tmp_path / ".job-77.0")
    assert distributed.inherited_run_dir(tmp_path, timeout_s=0.6) == tmp_path / "run-a"
    monkeypatch.setenv("SLURM_PROCID", "0")
    distributed.release_run_dir(tmp_path)
    assert not (tmp_path / ".job-77.0").exists()


def test_torch_version_check():
    from gen3d.reliability.versions import check_torch_version

    check_torch_version()  # the installed torch
    with pytest.raises(UserError, match=">= 2.6"):
        check_torch_version("2.4.1+cu121")


def test_video_ctrl_c_keeps_the_newest_two_checkpoints_and_resumes(tiny_pipeline, tmp_path, monkeypatch):
    from gen3d.reliability.interrupt import Interrupted
    from gen3d.utils.media import write_video
    from tests.test_video_e2e import _cfg
    from video.demo import moving_shape
    from video.run import run_video
    from video.tune import VideoTuner

    clip = write_video(tmp_path / "in.gif", moving_shape(4, 64).permute(0, 2, 3, 1), fps=5)
    run_dir = tmp_path / "v"
    run_dir.mkdir()
    every = ["trainer.checkpoint_every=1", "sampling.steps=2", "sampling.inversion_steps=2"]
    step = ctrl_c_in_step(VideoTuner, 1, monkeypatch)
    cfg3 = _cfg("tuneavideo", tiny_pipeline, clip, tmp_path, "trainer.max_steps=3", *every)
    with pytest.raises(Interrupted, match="interrupted at step 2 "):
        run_video(cfg3, run_dir)
    ckpts = run_dir / "ckpts"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-000001.ckpt", "step-000002.ckpt"]
    monkeypatch.setattr(VideoTuner, "training_step", step)
    run_video(cfg3, run_dir)  # continues the interrupted fine-tuning
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-000002.ckpt", "step-000003.ckpt"]
    run_video(_cfg("tuneavideo", tiny_pipeline, clip, tmp_path, "trainer.max_steps=4", *every), run_dir)
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-000003.ckpt", "step-000004.ckpt"]
    assert newest_state(ckpts).step == 4


def test_from_a_run_with_other_particles_is_one_line(tiny_pipeline, tmp_path, capsys):
    src = tmp_path / "src"
    (src / "ckpts" / "geometry").mkdir(parents=True)
    (src / "config.yaml").write_text("system: text3d\nname: prolificdreamer\nprompt: a red cube\n")
    one_particle = {"state_dict": {"scenes.0.geometry.offsets": torch.zeros(3)}, "global_step": 10**6}
    torch.save(one_particle, src / "ckpts" / "geometry" / "last.ckpt")
    out = tmp_path / "out"
    argv = ["--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--model", tiny_pipeline, "--output", out]
    code, err = run([*argv, "--stage", "texture", "--from", src, "--particles", "2"], capsys)
    one_error_line(code, err, "particle")  # the saved config's check, else the checkpoint's (stages.py)
    assert not out.exists()  # nothing written


def test_branching_a_multi_stage_run_archives_the_later_stages(tmp_path):
    from gen3d.reliability import lineage

    dirs = [("coarse", tmp_path / "ckpts" / "coarse"), ("refine", tmp_path / "ckpts" / "refine")]
    for (_, d), steps in zip(dirs, [(2, 4), (1,)]):
        d.mkdir(parents=True)
        for step in steps:
            torch.save({"state_dict": {"w": torch.zeros(1)}, "global_step": step}, d / f"step-{step:06d}.ckpt")
    states, archive = lineage.plan(dirs, None)
    assert states["coarse"].step == 4 and states["refine"].step == 1 and archive == []
    older = dirs[0][1] / "step-000002.ckpt"
    with pytest.raises(UserError, match="newest state"):
        lineage.plan(dirs, older, export_only=True)
    states, archive = lineage.plan(dirs, older)
    assert states["coarse"].step == 2 and states["refine"] is None
    assert sorted(p.name for p in archive) == ["step-000001.ckpt", "step-000004.ckpt"]
    dest = lineage.archive_files(tmp_path, archive, states)
    assert sorted(p.name for p in dest.rglob("*.ckpt")) == ["step-000001.ckpt", "step-000004.ckpt"]
    assert os.path.samefile(dirs[0][1] / "last.ckpt", older) and not list(dirs[1][1].iterdir())


def test_model_failing_while_its_weights_load_leaves_no_run(tiny_pipeline, tmp_path, capsys):
    """A folder that passes the file checks but whose UNet does not match its weights fails while loading:
    the run directory this invocation created is removed, so a later plain --resume cannot pick it."""
    import json

    model = tmp_path / "model"
    shutil.copytree(tiny_pipeline, model)
    cfg_file = model / "unet" / "config.json"
    unet = json.loads(cfg_file.read_text())
    unet["cross_attention_dim"] = 2 * unet["cross_attention_dim"]  # the weights no longer fit
    cfg_file.write_text(json.dumps(unet))
    out = tmp_path / "out"
    code = launch.main([str(a) for a in args_for(model, out)])
    assert code == 2
    assert not (out / "dreamfusion").exists() or not any((out / "dreamfusion").iterdir())
