"""A table of bad inputs for launch.py, shared by tests/test_faults_inputs.py and bench/bench_faults.py.

Each case is a command line that must end with exit code 2, exactly one `error:` line on stderr
(containing `expect`), no traceback, and no file written anywhere under the work folder. Paths in
the arguments are `{name}` placeholders filled in by `make_fixtures(work)`: broken model folders,
a config file that is not UTF-8, a config whose `name` climbs out of --output, a small frame folder.
The cases run in-process through `launch.main` (what `python launch.py` runs); the test also runs
one in a real process to check that the error path imports neither Lightning nor diffusers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILTIN = REPO / "extern" / "builtin-prior"
# the configs' default model is a hub id (paper scale); these cases run on the builtin prior (its profile)
DF = ["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--model", "builtin"]
PD = ["--config", "prolificdreamer.yaml", "--prompt", "a red cube", "--model", "builtin"]
TAV = ["--config", "tuneavideo.yaml", "--video", "{frames}", "--prompt", "a red cube", "--edit", "a blue cube"]
TAV += ["--model", "builtin"]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    expect: str  # a substring of the error line
    needs_no_cuda: bool = False  # the input is only bad on a machine without CUDA


@dataclass
class Outcome:
    code: int | None
    stderr: str
    traceback: str = ""  # set when launch.main raised
    written: list[str] = field(default_factory=list)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]

    @property
    def one_line(self) -> bool:
        return (
            self.code == 2
            and not self.traceback
            and len(self.stderr.strip().splitlines()) == 1 == len(self.error_lines)
        )


def _c(id: str, args: list[str], expect: str, **kw) -> Case:
    return Case(id, args, expect, **kw)


CASES = [
    # value ranges declared next to each field (gen3d.config.ranged)
    _c("camera.height=0", [*DF, "camera.height=0"], "'camera.height' must be in [8, 8192] (got 0)"),
    _c("camera.width=-64", [*DF, "camera.width=-64"], "'camera.width' must be in [8, 8192]"),
    _c("geometry.radius=-1", [*DF, "geometry.radius=-1"], "'geometry.radius' must be > 0"),
    _c("seed=-1", [*DF, "seed=-1"], "'seed' must be in [0,"),
    _c("trainer.batch_size=0", [*DF, "trainer.batch_size=0"], "'trainer.batch_size' must be in [1, 1024]"),
    _c("renderer.num_samples_per_ray=0", [*DF, "renderer.num_samples_per_ray=0"], "'renderer.num_samples_per_ray'"),
    _c("turntable.n_views=0", [*DF, "turntable.n_views=0"], "'turntable.n_views' must be in [1, 3600]"),
    _c("hash_grid.n_levels=0", [*DF, "geometry.hash_grid.n_levels=0"], "'geometry.hash_grid.n_levels'"),
    _c("trainer.precision=64-weird", [*DF, "trainer.precision=64-weird"], "must be one of 32-true"),
    _c("export.resolution=1", [*DF, "export.resolution=1"], "'export.resolution' must be in [8, 1024]"),
    _c("guidance_scale=nan", [*DF, "guidance.guidance_scale=nan"], "'guidance.guidance_scale' must be a finite"),
    _c("guidance_scale=inf", [*DF, "guidance.guidance_scale=inf"], "must be a finite number (got inf)"),
    _c(
        "guidance_scale=-5 (magic3d)",
        ["--config", "magic3d.yaml", "--prompt", "a red cube", "guidance.guidance_scale=-5"],
        "must be >= 0",
    ),
    _c("optimizer.lr=-1", [*DF, "optimizer.lr=-1"], "'optimizer.lr' must be >= 0"),
    _c("loss.sparsity=-1", [*DF, "loss.sparsity=-1"], "'loss.sparsity' must be >= 0"),
    _c("schedule value 1.5", [*DF, "guidance.max_step_percent=[0,0.98,1.5,100]"], "must be in [0, 1] (got 1.5)"),
    _c("camera.fovy_range=[40,200]", [*DF, "camera.fovy_range=[40,200]"], "'camera.fovy_range' must be in (0, 180)"),
    _c("nan in a pair", [*DF, "camera.distance_range=[2,nan]"], "'camera.distance_range[1]' must be a finite"),
    _c("device=tpu", [*DF, "device=tpu"], "'device' must be one of auto, cpu, cuda"),
    _c("particles=10000", [*DF, "particles=10000"], "'particles' must be in [1, 256]"),
    _c(
        "particles out of memory",
        [*DF, "--device", "cpu", "--particles", "200", "camera.height=2048", "camera.width=2048"],
        "needs at least",
    ),
    _c("--particles 0", [*DF, "--particles", "0"], "'particles' must be in [1, 256]"),
    _c("--steps -1", [*DF, "--steps", "-1"], "--steps must be >= 0"),
    _c(
        "stage override out of range",
        [*PD, "stages=[{name: a, overrides: {camera: {height: 0}}}]"],
        "stages[0] ('a') overrides",
    ),
    _c("stages.NAME.key of no such stage", [*PD, "stages.fine.camera.height=64"], "unknown stage 'fine'"),
    _c("stages.NAME.key out of range", [*PD, "stages.texture.camera.height=0"], "('texture') overrides"),
    # S4: the config's name is one folder under --output
    _c(
        "name: ../escaped (S4)",
        ["--config", "{evil_name}", "--prompt", "a red cube"],
        "config key 'name' must be a folder name",
    ),
    _c("name=.. override", [*DF, "name=.."], "config key 'name' must be a folder name"),
    _c("name=a/b override", [*DF, "name=a/b"], "config key 'name' must be a folder name"),
    # config files and overrides that do not parse
    _c("config not UTF-8", ["--config", "{latin1}", "--prompt", "a red cube"], "is not UTF-8 text"),
    _c("config not a mapping", ["--config", "{yaml_list}", "--prompt", "a red cube"], "must hold a mapping"),
    _c("config missing", ["--config", "nope.yaml", "--prompt", "a red cube"], "config file 'nope.yaml' not found"),
    _c("unknown key", [*DF, "guidance.scale=3"], "unknown config key 'guidance.scale'"),
    _c("wrong type", [*DF, "trainer.max_steps=abc"], "config key 'trainer.max_steps'"),
    _c("override without =", [*DF, "camera.height"], "must look like key=value"),
    _c("interpolation in an override", [*DF, "prompt=${nosuch}"], "Interpolation key 'nosuch' not found"),
    # S2: --prompt / --edit are data: ${...} is not interpolated (the builtin prior then rejects the word)
    _c("--prompt ${nosuch}", [*DF[:2], "--model", "builtin", "--prompt", "${nosuch}"], "unknown word"),
    _c(
        "--prompt ${oc.env:HOME}",
        [*DF[:2], "--model", "builtin", "--prompt", "${oc.env:HOME}"],
        "unknown word '${oc.env:home}'",
    ),
    # the device and the model are checked before the run directory exists
    _c("--device cuda without CUDA", [*DF, "--device", "cuda"], "no CUDA device", needs_no_cuda=True),
    _c("model_index.json corrupt", [*DF, "--model", "{bad_index}"], "cannot read"),
    _c("model_index.json a list", [*DF, "--model", "{list_index}"], "expected a JSON object"),
    _c("model without unet/", [*DF, "--model", "{no_unet}"], "has no unet/"),
    _c("unet/config.json corrupt", [*DF, "--model", "{bad_unet_config}"], "unet/config.json"),
    _c("no scheduler config", [*DF, "--model", "{no_scheduler}"], "scheduler_config.json"),
    _c("unet without weights", [*DF, "--model", "{no_weights}"], "no safetensors or .bin weights"),
    _c("empty tokenizer", [*DF, "--model", "{empty_tokenizer}"], "tokenizer folder"),
    _c("unet weights truncated", [*DF, "--model", "{truncated_weights}"], "is truncated"),
    _c("unet weights garbage", [*DF, "--model", "{garbage_weights}"], "is corrupt"),
    _c("model missing", [*DF, "--model", "/no/such/model"], "not found"),
    # command-line flags
    _c("--output ''", [*DF, "--output", ""], "--output is empty"),
    _c("--resume key=value", [*DF, "--resume", "trainer.max_steps=3"], "--resume: no run found"),
    _c("--resume missing", [*DF, "--resume", "/no/such/run"], "does not exist"),
    _c("--resume a folder that is no run", [*DF, "--resume", "{plain_dir}"], "is not a gen3d run"),
    _c("--from with the first stage", [*PD, "--stage", "nerf", "--from", "{plain_dir}"], "is the first stage"),
    _c(
        "--from a 1-particle run, --particles 2",
        [*PD, "--stage", "texture", "--from", "{one_particle_run}", "--particles", "2"],
        "trained with particles=1",
    ),
    _c(
        "--from a run with another hash grid",
        [*PD, "--stage", "geometry", "--from", "{one_particle_run}", "geometry.hash_grid.n_levels=6"],
        "geometry.hash_grid.n_levels=8",
    ),
    _c("--stage unknown", [*PD, "--stage", "nosuch"], "unknown stage 'nosuch'"),
    _c("--export-only without --resume", [*DF, "--export-only"], "--export-only needs --resume"),
    _c("empty prompt", ["--config", "dreamfusion.yaml", "--prompt", "  "], "prompt is empty"),
    # video editing
    _c("video --frames 1", [*TAV, "--frames", "1"], "'frames' must be in [2, 1024]"),
    _c("video sampling.steps=0", [*TAV, "sampling.steps=0"], "'sampling.steps' must be in [1, 1000]"),
    _c("video --size 12", [*TAV, "--size", "12"], "multiple of 8"),
    _c("video device=tpu", [*TAV, "device=tpu"], "'device' must be one of"),
    _c("video name=../x", [*TAV, "name=../x"], "config key 'name' must be a folder name"),
    _c("video guidance nan", [*TAV, "sampling.guidance_scale=nan"], "must be a finite number"),
    _c("video missing", [*TAV[:3], "/no/such.mp4", *TAV[4:]], "does not exist"),
    _c("video --edit ${nosuch}", [*TAV[:-1], "${nosuch}", "--frames", "99"], "has 8 frames"),
    _c("video --control unknown", [*TAV, "--config", "controlvideo.yaml", "--control", "hed"], "--control"),
]


def _model_copy(work: Path, name: str) -> Path:
    """The builtin prior as a folder of symlinks (no copy of its weights), to break one part of."""
    dst = work / "models" / name
    for src in BUILTIN.rglob("*"):
        if src.is_file():
            (dst / src.relative_to(BUILTIN)).parent.mkdir(parents=True, exist_ok=True)
            (dst / src.relative_to(BUILTIN)).symlink_to(src)
    return dst


def _replace(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text)


def make_fixtures(work: Path) -> dict[str, str]:
    """Create the files the cases name under `work`; returns the placeholder -> path map."""
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    m = paths["bad_index"] = _model_copy(work, "bad-index")
    _replace(m / "model_index.json", '{"unet": ["diffusers", ')
    m = paths["list_index"] = _model_copy(work, "list-index")
    _replace(m / "model_index.json", "[1, 2]")
    m = paths["no_unet"] = _model_copy(work, "no-unet")
    shutil.rmtree(m / "unet")
    m = paths["bad_unet_config"] = _model_copy(work, "bad-unet-config")
    _replace(m / "unet" / "config.json", "{ not json")
    m = paths["no_scheduler"] = _model_copy(work, "no-scheduler")
    (m / "scheduler" / "scheduler_config.json").unlink()
    m = paths["no_weights"] = _model_copy(work, "no-weights")
    (m / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    m = paths["empty_tokenizer"] = _model_copy(work, "empty-tokenizer")
    for f in (m / "tokenizer").iterdir():
        f.unlink()
    m = paths["truncated_weights"] = _model_copy(work, "truncated-weights")
    weights = m / "unet" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])
    m = paths["garbage_weights"] = _model_copy(work, "garbage-weights")
    _replace(m / "unet" / "diffusion_pytorch_model.safetensors", "not a safetensors file at all")
    paths["one_particle_run"] = _prolificdreamer_run(work / "pd-run")
    paths["latin1"] = work / "latin1.yaml"
    paths["latin1"].write_bytes("system: text3d\nprompt: caf\xe9\n".encode("latin-1"))
    paths["yaml_list"] = work / "list.yaml"
    paths["yaml_list"].write_text("- system: text3d\n")
    paths["evil_name"] = work / "evil.yaml"
    paths["evil_name"].write_text(json.dumps({"system": "text3d", "name": "../escaped"}))
    paths["plain_dir"] = work / "plain"
    paths["plain_dir"].mkdir(exist_ok=True)
    paths["frames"] = work / "frames"
    _frames(paths["frames"], 8)
    return {k: str(v) for k, v in paths.items()}


def _prolificdreamer_run(run: Path) -> Path:
    """A finished-looking 1-particle ProlificDreamer run: config.yaml and a (placeholder) stage checkpoint."""
    from gen3d.config import read_yaml, resolve_config_path, to_yaml
    from gen3d.profiles import build_with_profile
    from gen3d.systems.config import Text3DConfig

    layer = {"prompt": "a red cube", "model": "builtin"}  # as the cases' PD runs: the builtin profile
    cfg = build_with_profile(Text3DConfig, read_yaml(resolve_config_path("prolificdreamer.yaml")), layer)
    for stage in ("nerf", "geometry"):
        (run / "ckpts" / stage).mkdir(parents=True)
        (run / "ckpts" / stage / "last.ckpt").write_bytes(b"")
    (run / "config.yaml").write_text(to_yaml(cfg))
    return run


def _frames(folder: Path, n: int) -> None:
    import imageio.v3 as iio
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((32, 32, 3), 235, np.uint8)
        img[8:24, 4 + i : 20 + i] = (200, 30, 30)
        iio.imwrite(folder / f"{i:03d}.png", img)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_case(case: Case, paths: dict[str, str], work: Path) -> Outcome:
    """Run one case in-process (cwd = work, --output under work) and what it wrote under work."""
    import launch

    args = list(case.args)
    for key, value in paths.items():
        args = [a.replace("{" + key + "}", value) for a in args]
    if "--output" not in args:
        args += ["--output", str(work / "outputs")]
    before, cwd, err = _tree(work), os.getcwd(), io.StringIO()
    outcome = Outcome(None, "")
    try:
        os.chdir(work)
        with contextlib.redirect_stderr(err):
            outcome.code = launch.main(args)
    except BaseException:  # a traceback is what the table is there to catch
        outcome.traceback = traceback.format_exc()
    finally:
        os.chdir(cwd)
    outcome.stderr = err.getvalue()
    outcome.written = sorted(_tree(work) - before)
    return outcome


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
