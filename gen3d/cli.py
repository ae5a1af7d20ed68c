"""What launch.py does with its arguments: config layers, run directory, dispatch to a system."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import logging
import re
from pathlib import Path

from gen3d.config import NAME, NAME_DOC, literal, read_yaml, resolve_config_path
from gen3d.errors import UserError
from gen3d.methods import METHOD_ALIASES, SYSTEMS, system_of
from gen3d.profiles import build_with_profile, profile_line
from gen3d.reliability.versions import check_torch_version
from gen3d.systems.stages import with_steps
from gen3d.utils.distributed import (
    device_overrides,
    global_rank,
    inherited_run_dir,
    num_nodes,
    release_run_dir,
    share_run_dir,
)
from gen3d.utils.loggers import check_loggers
from gen3d.utils.rundir import check_writable, discard_if_empty, new_run_dir, refuse_links_outside, runs_of_prompt
from gen3d.utils.threads import apply_thread_policy, processes_per_node

# command-line flag -> config key (applied only when the config has that key)
FLAG_KEYS = {
    "prompt": "prompt",
    "model": "model",
    "seed": "seed",
    "steps": "trainer.max_steps",
    "output": "output",
    "device": "device",
    "video": "video",
    "edit": "edit",
    "control": "control",
    "controlnet": "controlnet",
    "particles": "particles",
    "frames": "frames",
    "stride": "stride",
    "start": "start",
    "size": "size",
    "mask": "mask",
}


def _load(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def _call(fn, *args, **kwargs):
    """Call fn with the keyword options it accepts; options it does not know are a UserError."""
    accepted = inspect.signature(fn).parameters
    implied = ("run_dir", "resume", "export_only")  # what a function may take, never a user error
    unknown = [k for k, v in kwargs.items() if k not in accepted and v is not None and k not in implied]
    if unknown:
        flag = {"from_run": "--from"}.get(unknown[0], f"--{unknown[0]}")
        raise UserError(f"{flag} does not apply to this config")
    return fn(*args, **{k: v for k, v in kwargs.items() if k in accepted})


def _has_key(schema, dotted: str) -> bool:
    node = schema
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            return False
        node = getattr(node, part)
    return True


def _flag_overrides(args: argparse.Namespace, schema_cls) -> dict:
    out: dict = {}
    defaults = schema_cls()
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if not _has_key(defaults, key):
            raise UserError(f"--{flag} does not apply to this config")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = literal(value)  # user strings are data: never interpolated (${...} stays as typed)
    return out


def check_args(args: argparse.Namespace) -> None:
    """Checks of the command line alone (before any config is read)."""
    if args.output is not None and not args.output.strip():
        raise UserError("--output is empty: pass a folder (default outputs/)")
    if args.resume is not None and not args.resume.strip():
        raise UserError("--resume is empty: pass a run directory or a checkpoint (or no value: the newest run)")
    if args.steps is not None and args.steps < 0:
        raise UserError(f"--steps must be >= 0 (got {args.steps})")


def check_name(name: str) -> None:
    """The config's `name` is a folder under --output: one path component, never '..' (any system)."""
    if not re.fullmatch(NAME, str(name)):
        raise UserError(f"config key 'name' must be {NAME_DOC} (got {name!r})")


def _run_dir_of(path: Path) -> Path | None:
    """The run directory holding path (the nearest parent with a config.yaml)."""
    for cand in [path, *path.parents]:
        if (cand / "config.yaml").is_file():
            return cand
    return None


def _find_resume(arg: str, yaml_cfg: dict, args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(run_dir, explicit checkpoint or None) for --resume [PATH]."""
    if arg == "latest":
        name = yaml_cfg.get("name") or yaml_cfg.get("system")
        prompt = args.prompt or yaml_cfg.get("prompt") or ""
        root = Path(args.output or yaml_cfg.get("output") or "outputs") / str(name)
        runs = runs_of_prompt(root, prompt)  # only runs of exactly this prompt (slugs may collide)
        if not runs:
            raise UserError(f"--resume: no run found under {root} for prompt '{prompt}'")
        return max(runs, key=lambda d: d.stat().st_mtime), None
    path = Path(arg)
    if not path.exists():
        raise UserError(f"--resume: '{arg}' does not exist")
    run_dir = _run_dir_of(path if path.is_dir() else path.parent)
    if run_dir is None or not (run_dir / "ckpts").is_dir():
        raise UserError(f"--resume: '{arg}' is not a gen3d run with checkpoints")
    return run_dir, (path if path.is_file() else None)


def _add_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def run_from_args(args: argparse.Namespace) -> dict:
    check_args(args)
    check_torch_version()
    resume = run_dir = None
    if args.config:
        yaml_cfg = read_yaml(resolve_config_path(args.config))
    elif args.resume and args.resume != "latest":
        yaml_cfg = {}
    else:
        raise UserError("--config is required (e.g. --config dreamfusion.yaml); see --help")
    if args.resume:
        run_dir, resume = _find_resume(args.resume, yaml_cfg, args)
        saved = run_dir / "config.yaml"
        if not args.config:
            if not saved.is_file():
                raise UserError(f"--resume: '{run_dir}' has no config.yaml")
            yaml_cfg = literal(read_yaml(saved))  # the resolved config: its strings are data
    system = yaml_cfg.get("system")
    if system_of(system) not in SYSTEMS:
        raise UserError(
            f"config must name a system: 'system: <name>' with one of {', '.join(SYSTEMS.names())} "
            f"(or a method name: {', '.join(METHOD_ALIASES)}; got {system!r})"
        )
    entry = SYSTEMS.get(system_of(system))
    schema_ref, run_ref, validate_ref = entry.schema, entry.run, entry.validate
    schema_cls = _load(schema_ref)
    devices = device_overrides(args.gpus, args.devices, args.device)
    if devices and not _has_key(schema_cls(), "trainer.devices"):
        raise UserError("--gpus / --devices do not apply to this config")
    flags = _flag_overrides(args, schema_cls)
    steps = flags.get("trainer", {}).pop("max_steps", None)  # applied below: staged methods split it
    later = (flags, devices, list(args.overrides))
    cfg = build_with_profile(schema_cls, yaml_cfg, *later, resolved=not args.config)  # gen3d.profiles
    if steps is not None:
        cfg = with_steps(cfg, steps)
    check_name(getattr(cfg, "name", system))
    options = {k: v for k, v in (("stage", args.stage), ("from_run", args.from_run)) if v is not None}
    if validate_ref:
        _call(_load(validate_ref), cfg, run_dir=run_dir, resume=resume, export_only=args.export_only, **options)
    if args.export_only and run_dir is None:
        raise UserError("--export-only needs --resume PATH (a run directory or a checkpoint)")
    check_loggers(getattr(cfg, "logger", None))
    if hasattr(cfg, "num_threads"):  # CPU threads of 3D and video runs (the builtin trainers set their own)
        apply_thread_policy(cfg.num_threads, processes_per_node(cfg))
    method_root = Path(getattr(cfg, "output", "outputs")) / getattr(cfg, "name", system)
    run_dir = run_dir or inherited_run_dir(method_root)
    # a single-process run owns the directory it creates (DDP ranks share it)
    created = run_dir is None and processes_per_node(cfg) == 1 and num_nodes() == 1
    if run_dir is None:
        check_writable(method_root)
        run_dir = new_run_dir(method_root.parent, method_root.name, getattr(cfg, "prompt", "") or "run")
    else:
        refuse_links_outside(run_dir)  # a resumed run writes nothing through links leaving it
    share_run_dir(run_dir, method_root)
    handler, failed = None, False
    try:
        if global_rank() == 0:
            handler = _add_log_file(run_dir)
            logging.getLogger("gen3d").info("run directory: %s", run_dir)
            if profile_line(cfg):
                logging.getLogger("gen3d").info(profile_line(cfg))
        result = _call(_load(run_ref), cfg, run_dir, resume, args.export_only, **options)
        if global_rank() == 0:
            from gen3d.report.summary import finish_run

            finish_run(run_dir)  # report.html and the few lines saying where everything is
        return result
    except Exception:
        failed = True
        raise
    finally:
        release_run_dir(method_root)
        if handler is not None:  # the run's log.txt is closed when it ends (several runs in one process)
            logging.getLogger().removeHandler(handler)
            handler.close()
        if failed and created and discard_if_empty(run_dir):  # e.g. weights that fail while loading
            logging.getLogger("gen3d").info("removed %s: the run failed before producing anything", run_dir)
