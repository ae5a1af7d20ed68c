"""What a video edit changes and what it keeps, on clips the builtin prior cannot draw, with local editing
on and off: Tune-A-Video and ControlVideo on the CPU.

    python bench/bench_video.py [--methods tuneavideo,controlvideo] [--clips NAME,...] [--threads 2]
        [--dilate 4] [--work DIR [--reuse]] [--json OUT.json] [key=value ...]

Each clip is rendered by `video.demo` (8 frames at 64x64) over a backdrop the prior never saw (grey,
dark, a colour gradient, a texture), with the renderer's ground-truth object masks. Per clip and method,
one run fine-tunes on the clip and samples two edits, the colour edit "a {to} {shape}" and the source
caption itself (local editing on, the default); an export-only run from the same checkpoint samples them
again with local.enabled=false. Printed per clip, on / off side by side:

* bg: PSNR between source and colour edit outside the ground-truth mask dilated by --dilate pixels
  (target >= 28 dB);
* rec: PSNR between the source and the edit equal to the source caption, whole frame (>= 28 dB);
* colour: share of frames the builtin classifier sees in the edited colour (>= 90%), judged on the
  object's pixels (ground-truth mask) over the prior's light backdrop: the classifier was trained on
  light backgrounds and misreads whole frames on dark ones even for the source;
* IoU: silhouette IoU of the edit with the source, the edit's silhouette being the pixels more than 0.1
  away from the known backdrop (>= 0.85);
* time: wall time of the whole run (load, fine-tune, invert, both edits, files, metrics; <= 300 s for
  8 frames on 2 cores) and of the export-only run without local editing; CPU: the process's CPU seconds
  (with one thread, the wall time it would take on a core of its own: the figure to read on a shared box).
Then per method the mean and the worst case (lowest figure, longest time) over the clips. Clips with a
shape edit (sphere -> cube) get two more export-only runs, "a {colour} {to_shape}" with
SHAPE_OVERRIDES, on / off: bg PSNR outside both objects dilated (the new shape rendered where the old one
is), the classifier's share of frames with the new shape, silhouette IoU with the new and the old object.
--reuse: clips already fine-tuned in --work are only re-sampled (export-only; time is then that run's).
Extra key=value overrides go to every run (e.g. sampling.exact_inversion=false).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.config import read_yaml, resolve_config_path  # noqa: E402
from gen3d.profiles import build_with_profile  # noqa: E402
from gen3d.utils.media import write_video  # noqa: E402
from video.config import VideoEditConfig  # noqa: E402
from video.demo import backdrop, moving_shape_and_mask  # noqa: E402
from video.metrics import Judge, psnr  # noqa: E402
from video.run import run_video  # noqa: E402

METHODS = {"tuneavideo": "tuneavideo.yaml", "controlvideo": "controlvideo.yaml"}


@dataclass
class ClipSpec:
    name: str
    shape: str
    colour: str
    to: str
    background: str
    motion: str
    to_shape: str | None = None  # also a shape edit "a {colour} {to_shape}"


# shape edits: the new object may grow outside the old one's edges, and needs freedom from its layout
SHAPE_OVERRIDES = ["local.snap=false", "sampling.source_attention=0.3"]
CLIPS = [
    ClipSpec("sphere-gradient-slide", "sphere", "blue", "red", "gradient", "slide", "cube"),
    ClipSpec("cube-grey-rise", "cube", "red", "blue", "grey", "rise"),
    ClipSpec("cylinder-gradient-zoom", "cylinder", "green", "purple", "gradient", "zoom"),
    ClipSpec("cone-texture-slide", "cone", "yellow", "green", "texture", "slide"),
    ClipSpec("cube-dark-spin", "cube", "purple", "yellow", "dark", "spin"),
]


def dilate(mask: torch.Tensor, px: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[:, None], 2 * px + 1, stride=1, padding=px)[:, 0] > 0.5 if px else mask


def clip_figures(
    judge: Judge,
    source: torch.Tensor,
    gt: torch.Tensor,
    back: torch.Tensor,
    edited: torch.Tensor,
    same: torch.Tensor,
    to: str,
    px: int,
) -> dict:
    """The bench's figures for one method on one clip (see the module docstring)."""
    on_white = torch.where(gt[:, None], edited, torch.full_like(edited, 0.92))
    colours = judge.classify(on_white, f"a {to}")["colours"]
    sil = (edited - back[None]).abs().amax(1) > 0.1
    iou = ((sil & gt).flatten(1).sum(1) / (sil | gt).flatten(1).sum(1).clamp(min=1)).mean()
    return {
        "bg": psnr(source, edited, ~dilate(gt, px)),
        "rec": psnr(source, same),
        "colour": sum(c == to for c in colours) / len(colours),
        "iou": float(iou),
    }


def shape_figures(judge, source, gt, new_gt, back, edited, to_shape: str, px: int) -> dict:
    """A shape edit's figures: bg PSNR outside both objects (the new one rendered at the old one's place),
    the classifier's share of frames with the new shape (on the union's pixels over the light backdrop),
    the edit's silhouette IoU with the new object's and with the old object's masks."""
    both = gt | new_gt
    on_white = torch.where(both[:, None], edited, torch.full_like(edited, 0.92))
    shapes = judge.classify(on_white, f"a {to_shape}")["shapes"]
    sil = (edited - back[None]).abs().amax(1) > 0.1
    iou = lambda m: float(((sil & m).flatten(1).sum(1) / (sil | m).flatten(1).sum(1).clamp(min=1)).mean())  # noqa: E731
    return {
        "bg": psnr(source, edited, ~dilate(both, px)),
        "shape": sum(v == to_shape for v in shapes) / len(shapes),
        "iou_new": iou(new_gt),
        "iou_old": iou(gt),
    }


def _frames(run_dir: Path, i: int) -> torch.Tensor:
    import imageio.v3 as iio

    files = sorted((run_dir / "frames" / f"edit-{i}").glob("*.png"))
    return torch.stack([torch.from_numpy(iio.imread(f)).permute(2, 0, 1)[:3].float() / 255 for f in files])


def _config(method: str, base: dict, overrides: list[str]) -> VideoEditConfig:
    return build_with_profile(VideoEditConfig, read_yaml(resolve_config_path(METHODS[method])), base, overrides)


def _run(cfg: VideoEditConfig, run_dir: Path, tune: bool) -> tuple[float, float]:
    """One run (fine-tuning when tune, else export-only from run_dir's checkpoint): its (wall, CPU) seconds."""
    t0, c0 = time.perf_counter(), time.process_time()
    run_video(cfg, run_dir, export_only=not tune, resume=None if tune else run_dir / "ckpts" / "last.ckpt")
    return time.perf_counter() - t0, time.process_time() - c0


def bench_clip(
    method: str, spec: ClipSpec, work: Path, judge: Judge, overrides: list[str], px: int, reuse: bool = False
) -> dict:
    """{"on": figures, "off": figures} of the colour edit (and "shape-on" / "shape-off" for a shape edit)."""
    frames, gt = moving_shape_and_mask(8, 64, spec.shape, spec.colour, motion=spec.motion, background=spec.background)
    video = write_video(work / f"{spec.name}.mp4", frames.permute(0, 2, 3, 1), fps=8)
    source, back = _frames_from_video(video), backdrop(spec.background, 64)
    base = {"model": "builtin", "video": str(video), "prompt": f"a {spec.colour} {spec.shape}", "frames": 8}
    base["output"] = str(work)
    colour_edit = [f"a {spec.to} {spec.shape}", f"a {spec.colour} {spec.shape}"]
    out = {}
    run_dir = work / method / spec.name
    for local in (True, False):
        flag = f"local.enabled={str(local).lower()}"
        cfg = _config(method, {**base, "edit": colour_edit}, overrides + [flag])
        tuned = reuse and (run_dir / "ckpts" / f"step-{cfg.trainer.max_steps:06d}.ckpt").is_file()
        wall, cpu = _run(cfg, run_dir, tune=local and not tuned)
        figures = clip_figures(judge, source, gt, back, _frames(run_dir, 0), _frames(run_dir, 1), spec.to, px)
        out["on" if local else "off"] = {**figures, "time": wall, "cpu": cpu, "tuned": local and not tuned}
        _keep(run_dir, "local" if local else "global")
    if spec.to_shape:
        new_gt = moving_shape_and_mask(8, 64, spec.to_shape, spec.colour, motion=spec.motion)[1]
        for local in (True, False):
            flag = f"local.enabled={str(local).lower()}"
            edit = [f"a {spec.colour} {spec.to_shape}"]
            cfg = _config(method, {**base, "edit": edit}, overrides + SHAPE_OVERRIDES + [flag])
            wall, cpu = _run(cfg, run_dir, tune=False)
            fig = shape_figures(judge, source, gt, new_gt, back, _frames(run_dir, 0), spec.to_shape, px)
            out["shape-on" if local else "shape-off"] = {**fig, "time": wall, "cpu": cpu}
            _keep(run_dir, "shape-local" if local else "shape-global")
    return out


def write_strip(run_dir: Path, out: Path) -> Path:
    """The docs' before/after strip of one clip: rows source, edit with local editing off, on, its mask."""
    import imageio.v3 as iio
    import numpy as np

    names = ["source.mp4", "global-edit-0.mp4", "local-edit-0.mp4", "local-mask-0.mp4"]
    rows = [np.concatenate([np.asarray(f)[..., :3] for f in iio.imiter(run_dir / n)], axis=1) for n in names]
    iio.imwrite(out, np.concatenate(rows, axis=0).repeat(2, 0).repeat(2, 1))
    return out


def _keep(run_dir: Path, prefix: str) -> None:
    """Keep a run's edit-0 outputs under prefix-* for the docs' strips (the next run overwrites them)."""
    for name in ("edit-0.mp4", "mask-0.mp4", "compare-0.mp4"):
        if (run_dir / name).is_file():
            (run_dir / name).replace(run_dir / f"{prefix}-{name}")


def _frames_from_video(path: Path) -> torch.Tensor:
    """The source as the run reads it (through the mp4), so that codec loss is not counted as edit error."""
    from video.io import read_video

    return read_video(path, 8, size=64).frames


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", default="tuneavideo,controlvideo")
    p.add_argument("--clips", default=",".join(c.name for c in CLIPS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dilate", type=int, default=4, help="pixels added around the ground-truth mask")
    p.add_argument("--work", default=None, help="output folder (default: a temporary one)")
    p.add_argument("--reuse", action="store_true", help="clips already fine-tuned in --work: export-only runs")
    p.add_argument("--json", default=None, help="also write the figures there")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--strips", default=None, help="only write the docs' strips of --work's clips to this folder")
    a = p.parse_args()
    if a.strips:
        for method in a.methods.split(","):
            for name in a.clips.split(","):
                print(write_strip(Path(a.work) / method / name, Path(a.strips) / f"{method}-local-edit-{name}.png"))
        return
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.WARNING)
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-video-"))
    judge = Judge(None, "extern/builtin-classifier", None)
    specs = [c for c in CLIPS if c.name in a.clips.split(",")]
    print(
        f"{torch.get_num_threads()} threads; bg PSNR outside the GT mask dilated by {a.dilate} px; "
        f"overrides: {' '.join(a.overrides) or 'none'}",
        flush=True,
    )
    print(
        f"{'method':<13}{'clip, edit':<38}{'bg dB on/off':>14}{'rec dB on/off':>15}{'colour on/off':>15}"
        f"{'IoU on/off':>12}{'time s on/off':>15}{'CPU s on/off':>14}  (load {_load()})",
        flush=True,
    )
    results = {}
    for method in a.methods.split(","):
        for spec in specs:
            r = results[method, spec.name] = bench_clip(method, spec, work, judge, a.overrides, a.dilate, a.reuse)
            print(_row(method, f"{spec.name}, {spec.colour} -> {spec.to}", r["on"], r["off"]), flush=True)
        rows = [results[method, s.name] for s in specs]
        for label, agg in (("mean", lambda v: sum(v) / len(v)), ("worst", None)):
            on, off = ({k: _agg([r[side][k] for r in rows], k, agg) for k in FIGURES} for side in ("on", "off"))
            print(_row(method, f"{label} of {len(rows)} clips", on, off), flush=True)
    shapes = [(m, s) for (m, s), r in results.items() if "shape-on" in r]
    if shapes:
        print(f"shape edits ({' '.join(SHAPE_OVERRIDES)}): bg dB, new-shape share, IoU with new / old object, on/off")
    for m, name in shapes:
        r, spec = results[m, name], next(c for c in specs if c.name == name)
        on, off = r["shape-on"], r["shape-off"]
        print(
            f"{m:<13}{name + ', ' + spec.shape + ' -> ' + spec.to_shape:<38}{on['bg']:>7.1f}/{off['bg']:<6.1f}"
            f"{on['shape']:>8.0%}/{off['shape']:<6.0%}{on['iou_new']:>6.2f}/{off['iou_new']:<5.2f}"
            f"{on['iou_old']:>6.2f}/{off['iou_old']:<5.2f}",
            flush=True,
        )
    if a.json:
        rows = {f"{m}/{n}": r for (m, n), r in results.items()}
        Path(a.json).write_text(json.dumps({"load": _load(), "overrides": a.overrides, "results": rows}, indent=1))
    print(f"outputs: {work}  (load: {_load()})")


FIGURES = ("bg", "rec", "colour", "iou", "time", "cpu")


def _agg(values: list[float], key: str, agg) -> float:
    """agg(values), or the worst of them (the lowest; the longest time)."""
    if agg is not None:
        return agg(values)
    return max(values) if key in ("time", "cpu") else min(values)


def _row(method: str, label: str, on: dict, off: dict) -> str:
    return (
        f"{method:<13}{label:<38}"
        f"{on['bg']:>7.1f}/{off['bg']:<6.1f}{on['rec']:>8.1f}/{off['rec']:<6.1f}"
        f"{on['colour']:>8.0%}/{off['colour']:<6.0%}{on['iou']:>6.2f}/{off['iou']:<5.2f}"
        f"{on['time']:>8.0f}/{off['time']:<6.0f}{on['cpu']:>7.0f}/{off['cpu']:<6.0f}"
    )


def _load() -> str:
    import os

    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
