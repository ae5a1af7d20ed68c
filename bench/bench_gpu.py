"""GPU figures at the papers' scale, with random weights of Stable Diffusion's size (same cost).

    python bench/bench_gpu.py vsd    [--size 512] [--steps 10] [key=value ...]  # ProlificDreamer stage 1
    python bench/bench_gpu.py video  [--frames 24] [--size 512] [--steps 10]    # Tune-A-Video fine-tuning
    python bench/bench_gpu.py text3d [--config dreamfusion.yaml] [--steps 200]  # builtin prior, it/s on one GPU

`vsd`: the NeRF rendered at size x size, VSD with an SD-2.1-base-sized UNet (865M parameters,
1024-d cross-attention, float16 weights: `model_dtype=auto`) and a rank-16 LoRA, one particle;
prints seconds per iteration and the peak GPU memory against the 16 GB target (threestudio's
ProlificDreamer: ~27-30 GB on an A100). `video`: an SD-1.5-sized UNet (860M, 768-d) inflated as
Tune-A-Video, `frames` frames at size x size (latents size/8), 16-mixed precision and gradient
checkpointing; seconds per fine-tuning step and peak memory (papers: 300-500 steps in 10-15 min on
an A100). The text encoders are small (the prompt is encoded once; it does not change the cost).
Only the timed steps after `--warmup` count. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from gen3d.config import read_yaml, resolve_config_path  # noqa: E402
from gen3d.profiles import build_with_profile  # noqa: E402

SD_UNETS = {  # UNet2DConditionModel configs of Stable Diffusion 2.1-base and 1.5 (sizes only)
    "sd21": dict(cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True),
    "sd15": dict(cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False),
}


def sd_sized_pipeline(kind: str, out: Path) -> Path:
    """A random-weight StableDiffusionPipeline folder with SD's UNet and VAE sizes (cached in `out`)."""
    if (out / "model_index.json").is_file():
        return out
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from gen3d.prior.model import PriorArchConfig, build_components, make_pipeline, save_pipeline_atomic

    dim = SD_UNETS[kind]["cross_attention_dim"]
    parts = build_components(PriorArchConfig(text_hidden=dim, text_heads=8))
    parts["unet"] = UNet2DConditionModel(
        sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, **SD_UNETS[kind]
    )
    parts["vae"] = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    return save_pipeline_atomic(make_pipeline(parts), out)


class StepTimer(Callback):
    """Seconds per step (CUDA-synchronised) after `warmup` steps, and the peak memory over them."""

    def __init__(self, warmup: int):
        self.warmup, self.times, self.t0 = warmup, [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        torch.cuda.synchronize()
        if trainer.global_step == self.warmup:
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        torch.cuda.synchronize()
        if trainer.global_step > self.warmup:
            self.times.append(time.perf_counter() - self.t0)

    def report(self) -> dict:
        t = sorted(self.times)
        return {
            "s_per_it": sum(t) / max(len(t), 1),
            "median_s": t[len(t) // 2] if t else float("nan"),
            "peak_gb": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gb": torch.cuda.max_memory_reserved() / 2**30,
            "timed_steps": len(t),
        }


def fit(module, loader, steps: int, warmup: int, precision: str) -> dict:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup,
        accelerator="cuda",
        devices=1,
        precision=precision,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, loader)
    return timer.report()


def bench_text3d(a, overrides: list[str], model: str, extra: dict) -> dict:
    from gen3d.systems.stages import stage_configs
    from gen3d.systems.text3d import RandomCameraDataset, Text3DConfig, Text3DSystem

    cfg = build_with_profile(
        Text3DConfig,
        read_yaml(resolve_config_path(a.config)),
        {"prompt": a.prompt, "model": model, "device": "cuda", **extra},
        overrides,
    )
    name, scfg = stage_configs(cfg)[0]
    system = Text3DSystem(scfg)
    from gen3d.utils.schedule import schedule_max

    batch = schedule_max(scfg.trainer.batch_size)  # (a schedule: each step takes its share)
    data = RandomCameraDataset(scfg.camera, length=(a.steps + a.warmup) * batch, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=batch)
    r = fit(system, loader, a.steps, a.warmup, scfg.trainer.precision)
    r.update(
        stage=name,
        render=f"{scfg.camera.height}x{scfg.camera.width}",
        model_dtype=str(system.prior.dtype),
        unet_params_m=sum(p.numel() for p in system.prior.unet.parameters()) / 1e6,
        nerfacc=type(system.scene(0).occupancy).__name__,
    )
    return r


def bench_video(a, work: Path) -> dict:
    from gen3d.diffusion.prior import load_prior
    from video.config import VideoEditConfig
    from video.demo import moving_shape
    from video.run import build_model, encode_frames
    from video.tune import VideoTuner, _Steps

    model = sd_sized_pipeline("sd15", work / "sd15-random")
    cfg = build_with_profile(
        VideoEditConfig,
        read_yaml(resolve_config_path("tuneavideo.yaml")),
        {"model": str(model), "frames": a.frames, "size": a.size},
    )
    prior = load_prior(str(model), "cuda")
    frames = moving_shape(a.frames, a.size).cuda()
    latents = encode_frames(prior, frames)
    emb = prior.encode_text(["a blue sphere"])
    tuner = VideoTuner(build_model(cfg, prior, frames), latents, emb, prior.scheduler, 3e-5)
    if a.gradient_checkpointing:
        prior.unet.enable_gradient_checkpointing()
    r = fit(
        tuner, torch.utils.data.DataLoader(_Steps(a.steps + a.warmup), batch_size=1), a.steps, a.warmup, a.precision
    )
    r.update(
        frames=a.frames,
        size=a.size,
        precision=a.precision,
        gradient_checkpointing=a.gradient_checkpointing,
        trainable_m=sum(p.numel() for p in tuner.parameters() if p.requires_grad) / 1e6,
        unet_params_m=sum(p.numel() for p in prior.unet.parameters()) / 1e6,
    )
    return r


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["vsd", "video", "text3d"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--config", default="prolificdreamer.yaml")
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--precision", default="16-mixed")
    p.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "gen3d-bench-gpu"))
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args()
    if not torch.cuda.is_available():
        sys.exit("error: bench_gpu.py needs a CUDA device")
    work = Path(a.work)
    t0 = time.perf_counter()
    if a.what == "vsd":
        model = str(sd_sized_pipeline("sd21", work / "sd21-random"))
        extra = {"camera": {"height": a.size, "width": a.size}, "guidance": {"lora_rank": 16}}
        r = bench_text3d(a, a.overrides, model, extra)
        target = 16.0
    elif a.what == "video":
        r, target = bench_video(a, work), None
    else:
        r, target = bench_text3d(a, a.overrides, "builtin", {}), None
    r.update(what=a.what, device=torch.cuda.get_device_name(), wall_s=time.perf_counter() - t0)
    line = (
        f"{a.what}: {r['s_per_it']:.3f} s/it (median {r['median_s']:.3f}), {1 / r['s_per_it']:.2f} it/s, "
        f"peak {r['peak_gb']:.1f} GB allocated / {r['peak_reserved_gb']:.1f} GB reserved"
    )
    if target:
        line += f" [target < {target:.0f} GB: {'OK' if r['peak_gb'] < target else 'MISSED'}, ratio {r['peak_gb'] / target:.2f}]"
    print(line)
    print(json.dumps(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
