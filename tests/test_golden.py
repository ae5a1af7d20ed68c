"""Fixed-seed figures of tiny DreamFusion, Magic3D, ProlificDreamer and Latent-NeRF runs stay what they
were before the method-assembly refactor (issue 10): the logged loss of every step, a checksum of every
stage's trained weights, and the exported mesh's size and vertex sum.

Regenerate (only for an intended change of behaviour):
    OMP_NUM_THREADS=1 python -m tests.test_golden tests/golden_methods.json
"""

import json
import logging
import math
import re
import sys
from pathlib import Path

import pytest
import torch
import trimesh

GOLDEN = Path(__file__).with_name("golden_methods.json")
TINY = [
    "camera.height=32",
    "camera.width=32",
    "export.resolution=40",
    "export.texture_size=64",
    "turntable.n_views=2",
    "turntable.resolution=32",
    "mesh.resolution=40",
    "trainer.preview_every=0",
    "trainer.log_every=1",
    "prompt_processor.cache_dir=null",
    "renderer.num_samples_per_ray=24",
    "geometry.hash_grid.n_levels=4",
    "geometry.hash_grid.log2_hashmap_size=12",
]
RUNS = {
    "dreamfusion": ["--config", "dreamfusion.yaml", "--steps", "4"],
    "latent-nerf": [
        "--config",
        "dreamfusion.yaml",
        "--steps",
        "3",
        "rgb_as_latents=true",
        "background.type=mlp",
        "camera.height=16",
        "camera.width=16",
    ],
    "magic3d": [
        "--config",
        "magic3d.yaml",
        "stages=[{name: coarse, overrides: {trainer: {max_steps: 4}}}, {name: refine, overrides: "
        "{representation: mesh, camera: {height: 48, width: 48}, trainer: {max_steps: 2}}}]",
    ],
    "prolificdreamer": [
        "--config",
        "prolificdreamer.yaml",
        "stages=[{name: nerf, overrides: {trainer: {max_steps: 3}}}, {name: geometry, overrides: "
        "{representation: mesh, force_shading: normal, train_texture: false, guidance: {type: sds}, "
        "loss: {normal_consistency: 10.0, laplacian: 10.0}, trainer: {max_steps: 2}}}, "
        "{name: texture, overrides: {representation: mesh, train_geometry: false, "
        "trainer: {max_steps: 2}}}]",
    ],
}
STEP_LINE = re.compile(r"^\[(\w+)\] step (\d+) .*\bloss=(\S+)")


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def figures(method: str, model: Path, out: Path) -> dict:
    import launch
    from gen3d.cli import run_from_args

    handler = _Lines()
    logger = logging.getLogger("gen3d")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        run_from_args(
            launch.parse_args(
                [*RUNS[method], "--prompt", "a red cube", "--model", str(model), "--output", str(out), *TINY]
            )
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    run_dir = next((out / method.replace("latent-nerf", "dreamfusion")).iterdir())
    losses = [[m.group(1), int(m.group(2)), float(m.group(3))] for m in map(STEP_LINE.match, handler.lines) if m]
    weights = {}
    for ckpt in sorted(run_dir.glob("ckpts/**/last.ckpt")):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        weights[str(ckpt.parent.relative_to(run_dir))] = {
            "n_tensors": len(state),
            "abs_sum": float(sum(v.double().abs().sum() for v in state.values() if v.is_floating_point())),
        }
    mesh = trimesh.load(run_dir / "export" / "model.obj", force="mesh", process=False)
    return {
        "losses": losses,
        "weights": weights,
        "export": {
            "n_vertices": len(mesh.vertices),
            "n_faces": len(mesh.faces),
            "vertex_sum": float(abs(mesh.vertices).sum()),
        },
    }


def _close(a: float, b: float, rel: float) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


@pytest.mark.parametrize("method", list(RUNS))
def test_fixed_seed_figures_unchanged(method, tiny_pipeline, tmp_path):
    want = json.loads(GOLDEN.read_text())[method]
    got = figures(method, tiny_pipeline, tmp_path)
    assert [l[:2] for l in got["losses"]] == [l[:2] for l in want["losses"]]
    for (_, step, a), (_, _, b) in zip(got["losses"], want["losses"]):
        assert _close(a, b, 1e-3), f"step {step}: loss {a} != {b}"  # logged with 4 significant digits
    assert got["weights"].keys() == want["weights"].keys()
    for stage, w in want["weights"].items():
        assert got["weights"][stage]["n_tensors"] == w["n_tensors"], stage
        assert _close(got["weights"][stage]["abs_sum"], w["abs_sum"], 1e-6), stage
    assert got["export"]["n_vertices"] == want["export"]["n_vertices"]
    assert got["export"]["n_faces"] == want["export"]["n_faces"]
    assert _close(got["export"]["vertex_sum"], want["export"]["vertex_sum"], 1e-6)


if __name__ == "__main__":  # record the figures (see the module docstring)
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    from gen3d.prior.model import build_random_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        model = build_random_pipeline(Path(tmp) / "pipe" / "tiny", seed=0)
        result = {m: figures(m, model, Path(tmp) / m) for m in RUNS}
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1) + "\n")
