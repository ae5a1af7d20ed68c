"""What a video edit changes and what it keeps, on clips the builtin prior cannot draw, with local editing
on and off: Tune-A-Video and ControlVideo on the CPU.

    python bench/bench_video.py [--methods tuneavideo,controlvideo] [--clips NAME,...] [--threads 2]
        [--dilate 4] [key=value ...]

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
  8 frames on 2 cores) and of the export-only run without local editing.
Extra key=value overrides go to every run (e.g. sampling.exact_inversion=false).
"""

from __future__ import annotations

import argparse
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


CLIPS = [
    ClipSpec("sphere-gradient-slide", "sphere", "blue", "red", "gradient", "slide"),
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


def _frames(run_dir: Path, i: int) -> torch.Tensor:
    import imageio.v3 as iio

    files = sorted((run_dir / "frames" / f"edit-{i}").glob("*.png"))
    return torch.stack([torch.from_numpy(iio.imread(f)).permute(2, 0, 1)[:3].float() / 255 for f in files])


def bench_clip(method: str, spec: ClipSpec, work: Path, judge: Judge, overrides: list[str], px: int) -> dict:
    frames, gt = moving_shape_and_mask(8, 64, spec.shape, spec.colour, motion=spec.motion, background=spec.background)
    video = write_video(work / f"{spec.name}.mp4", frames.permute(0, 2, 3, 1), fps=8)
    source = _frames_from_video(video)
    config = METHODS[method]
    base = {
        "model": "builtin",
        "video": str(video),
        "prompt": f"a {spec.colour} {spec.shape}",
        "edit": [f"a {spec.to} {spec.shape}", f"a {spec.colour} {spec.shape}"],
        "frames": 8,
        "output": str(work),
    }
    out = {}
    run_dir = work / method / spec.name
    for local in (True, False):
        cfg = build_with_profile(
            VideoEditConfig,
            read_yaml(resolve_config_path(config)),
            base,
            overrides + [f"local.enabled={str(local).lower()}"],
        )
        t0 = time.perf_counter()
        run_video(cfg, run_dir, export_only=not local, resume=None if local else run_dir / "ckpts" / "last.ckpt")
        seconds = time.perf_counter() - t0
        figures = clip_figures(
            judge, source, gt, backdrop(spec.background, 64), _frames(run_dir, 0), _frames(run_dir, 1), spec.to, px
        )
        out["on" if local else "off"] = {**figures, "time": seconds}
        if local:  # keep the local-edit outputs for the docs' strips
            for name in ("edit-0.mp4", "mask-0.mp4", "compare-0.mp4"):
                if (run_dir / name).is_file():
                    (run_dir / name).rename(run_dir / f"local-{name}")
    return out


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
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
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
        f"{'IoU on/off':>12}{'time s on/off':>15}",
        flush=True,
    )
    for method in a.methods.split(","):
        for spec in specs:
            r = bench_clip(method, spec, work, judge, a.overrides, a.dilate)
            on, off = r["on"], r["off"]
            print(
                f"{method:<13}{spec.name + ', ' + spec.colour + ' -> ' + spec.to:<38}"
                f"{on['bg']:>7.1f}/{off['bg']:<6.1f}{on['rec']:>8.1f}/{off['rec']:<6.1f}"
                f"{on['colour']:>8.0%}/{off['colour']:<6.0%}{on['iou']:>6.2f}/{off['iou']:<5.2f}"
                f"{on['time']:>8.0f}/{off['time']:<6.0f}",
                flush=True,
            )
    print(f"outputs: {work}  (load: {_load()})")


def _load() -> str:
    import os

    return " ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
