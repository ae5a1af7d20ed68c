"""Full-size smoke bench: each 3D method's paper-scale config, a few steps per stage, on a pipeline with
Stable Diffusion 2.1-base's exact shapes (random weights: UNet 865.9 M, VAE 83.7 M, OpenCLIP ViT-H text
encoder 340.4 M parameters), on the CPU. It proves that the paper-scale settings run end to end at full
width (every stage trains, hands on, exports); it does not measure speed worth quoting.

    OMP_NUM_THREADS=1 nice python bench/bench_sd_smoke.py [--model DIR] [--steps 3] [--methods ...] [-- ARGS]

--model: a Stable-Diffusion-2.1-base-shaped pipeline folder; built with random weights when missing
(`gen3d.diffusion.random_pipelines.write_pipeline("sd21-base", DIR, width="full")`: ~5 GB on disk, 50 s).
Each method runs as `launch.py --device cpu` in its own process with every stage's step count set to
--steps (--as-configured: the run gets `--steps` = that times its stage count, which launch.py splits over the
stages in proportion to their configured steps); per stage it prints the seconds per step (from the log's per-step lines, the first step left
out as warm-up when there are more) and the peak resident memory of the process during that stage
(sampled every 0.2 s from /proc). PAPER holds threestudio's values for each method (configs/ of
threestudio-project/threestudio: dreamfusion-sd, magic3d-coarse-sd / -refine-sd, prolificdreamer /
-geometry / -texture); --as-configured runs configs/*.yaml as they are instead (once they carry the
paper-scale values themselves). What a CPU cannot hold is reduced and said so in REDUCED.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing gen3d
DEFAULT_MODEL = Path(tempfile.gettempdir()) / "gen3d-sd21-base-full"

FIELD = (  # threestudio: 16-level hash grid, 2^19 entries, max resolution 4096, 64-wide MLP
    "geometry.hash_grid.n_levels=16",
    "geometry.hash_grid.log2_hashmap_size=19",
    "geometry.hash_grid.max_resolution=4096",
    "geometry.mlp_hidden=64",
    "renderer.num_samples_per_ray=512",
    "background.type=mlp",
)
SMALL_OUTPUTS = (  # not what is measured: keep the previews, turntables and exports short
    "trainer.preview_every=0",
    "trainer.log_every=1",
    "turntable.n_views=2",
    "turntable.resolution=64",
    "export.resolution=64",
    "export.texture_size=256",
)


def stages(*specs: tuple[str, str]) -> str:
    """stages=[...] override from (name, overrides-without-trainer) pairs; {steps} is filled in later."""
    items = [f"{{name: {n}, overrides: {{{o}{', ' if o else ''}trainer: {{max_steps: {{steps}}}}}}}}" for n, o in specs]
    return "stages=[" + ", ".join(items) + "]"


PAPER = {
    "dreamfusion": (
        *FIELD,
        "geometry.radius=2.0",
        "camera.height=64",
        "camera.width=64",
        "camera.distance_range=[1.5,2.0]",
        "camera.fovy_range=[40,70]",
        "camera.elevation_range=[-10,90]",
        "guidance.guidance_scale=100",
        "guidance.max_step_percent=0.98",
        "loss.sparsity=1.0",
        "trainer.max_steps={steps}",
    ),
    "magic3d": (
        *FIELD,
        "geometry.radius=2.0",
        "camera.height=64",
        "camera.width=64",
        "guidance.guidance_scale=100",
        "guidance.max_step_percent=0.98",
        stages(
            ("coarse", ""),
            (
                "refine",
                "representation: mesh, camera: {height: 512, width: 512}, guidance: {max_step_percent: 0.5}, "
                "loss: {normal_consistency: 10000.0, laplacian: 0.0}",
            ),
        ),
    ),
    "prolificdreamer": (
        *FIELD,
        "camera.height=64",  # threestudio: 64 px for the first 5000 of 25000 steps, then 512 (see REDUCED)
        "camera.width=64",
        "camera.distance_range=[1.0,1.5]",
        "camera.fovy_range=[40,70]",
        "camera.elevation_range=[-10,45]",
        "guidance.guidance_scale=7.5",
        "guidance.lora_rank=16",
        "guidance.lora_lr=0.0001",
        "loss.sparsity=10.0",
        stages(
            ("nerf", ""),
            (
                "geometry",
                "representation: mesh, force_shading: normal, train_texture: false, camera: {height: 512, width: 512}, "
                "guidance: {type: sds, guidance_scale: 100.0, max_step_percent: 0.5}, "
                "loss: {normal_consistency: 10000.0, laplacian: 10000.0}",
            ),
            (
                "texture",
                "representation: mesh, train_geometry: false, camera: {height: 512, width: 512}, "
                "guidance: {max_step_percent: 0.5}",
            ),
        ),
    ),
}
REDUCED = {
    "prolificdreamer": "nerf stage at 64 px only: its 512 px phase (steps 5000-25000 in threestudio) renders "
    "262144 rays x 512 samples per step (64x the 64 px phase's samples), beyond a 23 GB CPU machine in PyTorch",
}
STAGE_LINE = re.compile(r"(\S+ \S+) stage (\S+): (training|resuming)")
STEP_LINE = re.compile(r"(\S+ \S+) \[(\S+)\] step (\d+)")
EXPORT_LINE = re.compile(r"(\S+ \S+) exported particle")


def _stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def build_model(path: Path) -> None:
    from gen3d.diffusion.random_pipelines import write_pipeline

    print(f"building a random-weight SD-2.1-base-shaped pipeline at full width in {path} ...", flush=True)
    t = time.time()
    write_pipeline("sd21-base", path, width="full", weights="safetensors")
    print(f"  built in {time.time() - t:.0f} s", flush=True)


def parameter_counts(model: Path) -> str:
    """Parameters per component, from the safetensors headers (no weights loaded)."""
    import math

    from safetensors import safe_open

    parts = []
    for comp in ("unet", "vae", "text_encoder"):
        n = 0
        for f in sorted((model / comp).glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
        parts.append(f"{comp} {n / 1e6:.1f} M")
    return ", ".join(parts)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_method(method: str, model: Path, out: Path, steps: int, as_configured: bool, more: list[str]) -> dict:
    extra = [] if as_configured else [o.replace("{steps}", str(steps)) for o in PAPER[method]]
    if as_configured:  # launch's --steps is the run's total, split over the stages in proportion to theirs
        n_stages = max(1, len(yaml.safe_load((ROOT / "configs" / f"{method}.yaml").read_text()).get("stages") or []))
        extra += ["--steps", str(steps * n_stages)]
    cmd = [
        sys.executable,
        "launch.py",
        "--config",
        f"{method}.yaml",
        "--prompt",
        "a photo of a pineapple",
        "--model",
        str(model),
        "--device",
        "cpu",
        "--output",
        str(out),
        "model_dtype=float32",
        *SMALL_OUTPUTS,
        *extra,
        *more,
    ]
    samples: list[tuple[float, float]] = []
    t0 = time.time()
    err_file = out / f"{method}.stderr"  # a file, not a pipe: the run survives this process being stopped
    with open(err_file, "w") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), rss_mib(proc.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc.wait()
    stop.set()
    sampler.join()
    wall = time.time() - t0
    if proc.returncode != 0:
        return {"method": method, "error": (err_file.read_text().strip().splitlines() or ["?"])[-1], "wall": wall}
    log = next((out / method).glob("*/log.txt")).read_text()
    return {"method": method, "wall": wall, "stages": per_stage(log, samples), "peak": max(r for _, r in samples)}


def per_stage(log: str, samples: list[tuple[float, float]]) -> list[dict]:
    starts = [(m.group(2), _stamp(m.group(1))) for m in map(STAGE_LINE.match, log.splitlines()) if m]
    steps: dict[str, list[tuple[int, float]]] = {}
    for m in filter(None, map(STEP_LINE.match, log.splitlines())):
        steps.setdefault(m.group(2), []).append((int(m.group(3)), _stamp(m.group(1))))
    ends = [t for _, t in starts[1:]] + [max(t for t, _ in samples)]
    rows = []
    for (name, start), end in zip(starts, ends):
        marks = sorted(steps.get(name, []))
        times = [start] + [t for _, t in marks]
        per_step = [b - a for a, b in zip(times, times[1:])]
        timed = per_step[1:] if len(per_step) > 1 else per_step  # the first step includes the warm-up
        rss = [r for t, r in samples if start <= t <= end]
        rows.append(
            {
                "stage": name,
                "steps": len(marks),
                "s_per_step": statistics.mean(timed) if timed else float("nan"),
                "first_step": per_step[0] if per_step else float("nan"),
                "peak_rss_mib": max(rss) if rss else float("nan"),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--methods", nargs="*", default=list(PAPER))
    p.add_argument("--as-configured", action="store_true", help="run configs/*.yaml without the PAPER overrides")
    p.add_argument("more", nargs="*", help="further launch.py arguments, e.g. --stage texture --from RUN_DIR")
    a = p.parse_args()
    if not (a.model / "model_index.json").is_file():
        build_model(a.model)
    print(
        f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min), "
        f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        flush=True,
    )
    print(f"model {a.model}: {parameter_counts(a.model)} parameters", flush=True)
    out = Path(tempfile.mkdtemp(prefix="gen3d-sd-smoke-"))
    for method in a.methods:
        r = run_method(method, a.model, out, a.steps, a.as_configured, a.more)
        if "error" in r:
            print(f"{method}: FAILED after {r['wall']:.0f} s: {r['error']}", flush=True)
            continue
        print(f"{method}: {r['wall']:.0f} s wall in all, peak RSS {r['peak'] / 1024:.1f} GiB", flush=True)
        for s in r["stages"]:
            print(
                f"  {s['stage']:<9} {s['steps']} steps  {s['s_per_step']:7.1f} s/step "
                f"(first step {s['first_step']:.1f} s)  peak RSS {s['peak_rss_mib'] / 1024:5.1f} GiB",
                flush=True,
            )
        if method in REDUCED and not a.as_configured:
            print(f"  reduced: {REDUCED[method]}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}", flush=True)


if __name__ == "__main__":
    main()
