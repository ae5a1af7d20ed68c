"""A small canny ControlNet for the builtin prior (what ControlVideo uses with `--model builtin`).

`ControlNetModel.from_unet(prior.unet)` (diffusers) copies the prior UNet's encoder and adds zero
convolutions; it is trained on held-out renders of the prior's shapes (a different data seed) with
the usual epsilon MSE: latents from the frozen prior VAE, caption embeddings from the frozen text
encoder (caption dropped to "" with probability `p_uncond`, like the prior), the canny map of the
image (`gen3d.diffusion.control.canny_maps`, the thresholds ControlVideo uses) as the condition, and the
frozen prior UNet receiving the ControlNet residuals. Only the ControlNet is trained and
checkpointed: the prior is a `Prior` (not an nn.Module), so it never enters the checkpoint or the
optimizer. Checkpoints go to `run_dir/ckpts/controlnet/last.ckpt` (resumable); the result is written
atomically with `save_pretrained` to `cfg.output_dir` (default `extern/builtin-controlnet-canny`).

Run: `python launch.py --config configs/builtin-controlnet.yaml` or
`python -m gen3d.prior.controlnet [run_dir] [--resume | --export | --eval]`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
from safetensors.torch import load_file, save_file

from gen3d.config import to_yaml
from gen3d.diffusion.control import CONTROLNET_DIR, canny_maps, controlled
from gen3d.errors import UserError
from gen3d.utils.atomic import atomic_folder, write_text_atomic

from .data import CaptionedImages, PriorDataConfig, image_tensors, render_dataset
from .fitting import ckpt_dir, fit_stage, make_loader, warmup_lambda
from .latents import CachedLatents, cached_latents
from .losses import diffusion_loss

STAGE = "controlnet"  # checkpoints in run_dir/ckpts/controlnet/, logs in run_dir/controlnet/logs/


@dataclass
class ControlNetTrainConfig:
    system: str = "builtin-controlnet"
    name: str = "builtin-controlnet"  # run directory: outputs/<name>/run[-N]
    output: str = "outputs"
    seed: int = 0
    prior: str = "builtin"  # the frozen prior: 'builtin' or a diffusers pipeline folder
    # held-out renders: the prior trained on data seed 0, the classifier on 1234
    data: PriorDataConfig = field(default_factory=lambda: PriorDataConfig(n_images=8000, seed=1))
    # ControlNet's condition encoder: image -> latent resolution, one stride-2 conv per extra entry
    # (3 entries = factor 4, the builtin VAE's); diffusers' default (16, 32, 96, 256) is for SD's factor 8
    cond_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    canny_low: float = 0.1  # = video.config / video.control defaults
    canny_high: float = 0.2
    num_threads: int = 1
    steps: int = 6000
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 50
    p_uncond: float = 0.1
    max_minutes: float = 55.0  # training wall time (6000 steps: 37 min); rendering + latents + canny maps on top
    ckpt_every_minutes: float = 3.0
    output_dir: str = CONTROLNET_DIR
    progress_bar: bool = True


# ---------------------------------------------------------------- model and data


def build_controlnet(unet, cfg: ControlNetTrainConfig):
    """A fresh ControlNetModel initialised from the UNet's encoder (zero convs: no effect yet)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(cfg.cond_channels), conditioning_channels=3
    )


def check_cond_channels(prior, cfg: ControlNetTrainConfig) -> None:
    factor = prior.image_size // int(prior.unet.config.sample_size)
    if 2 ** (len(cfg.cond_channels) - 1) != factor:
        n = int(math.log2(factor)) + 1
        raise UserError(
            f"cond_channels needs {n} entries for this prior (image/latent factor {factor}), "
            f"got {len(cfg.cond_channels)}"
        )


def canny_dataset(data: dict, low: float, high: float, chunk: int = 512) -> torch.Tensor:
    """Canny maps of all images as uint8 [N,1,H,W] in {0,1} (gen3d.diffusion.control.canny_maps)."""
    out = []
    for i in range(0, len(data["images"]), chunk):
        x = image_tensors(data["images"][i : i + chunk])
        out.append((canny_maps(x, low, high)[:, :1] > 0.5).to(torch.uint8))
    return torch.cat(out)


def cached_canny(data: dict, cfg: ControlNetTrainConfig, run_dir: Path, resume: bool) -> torch.Tensor:
    path = run_dir / "canny.safetensors"
    if resume and path.exists():
        return load_file(str(path))["canny"]
    canny = canny_dataset(data, cfg.canny_low, cfg.canny_high)
    save_file({"canny": canny.contiguous()}, str(path))
    return canny


class ControlledLatents(CachedLatents):
    """((latent mean, latent std), caption, canny map uint8 [1,H,W]) per image."""

    def __init__(self, captions: CaptionedImages, mean, std, canny: torch.Tensor):
        super().__init__(captions, mean, std)
        self.canny = canny

    def __getitem__(self, i):
        return (*super().__getitem__(i), self.canny[i])


# ---------------------------------------------------------------- training


class ControlNetModule(L.LightningModule):
    """Trains the ControlNet alone; the prior (a plain `Prior`, not a submodule) stays frozen."""

    def __init__(self, controlnet, prior, cfg: ControlNetTrainConfig):
        super().__init__()
        self.controlnet, self.prior, self.cfg = controlnet, prior, cfg

    def loss(self, latents: torch.Tensor, captions: list[str], cond: torch.Tensor) -> torch.Tensor:
        """Epsilon MSE of the controlled UNet; latents scaled, cond [B,3,H,W] in [0,1]."""
        p = self.prior
        return diffusion_loss(
            controlled(p.unet, self.controlnet, cond),
            p.text_encoder,
            p.tokenizer,
            p.alphas_cumprod,
            latents,
            captions,
            p.prediction_type,
        )

    def training_step(self, batch, batch_idx):
        (mean, std), captions, canny = batch
        latents = (mean + std * torch.randn_like(mean)) * self.prior.vae.config.scaling_factor
        captions = ["" if torch.rand(()) < self.cfg.p_uncond else c for c in captions]
        loss = self.loss(latents, captions, canny.float().expand(-1, 3, -1, -1))
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.controlnet.parameters(), lr=self.cfg.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_lambda(self.cfg.warmup_steps))
        return [opt], [{"scheduler": sched, "interval": "step"}]


def save_controlnet_atomic(controlnet, out_dir: str | Path) -> Path:
    """save_pretrained (config.json + diffusion_pytorch_model.safetensors) into a temporary sibling
    folder, then swap it into place."""
    with atomic_folder(out_dir) as tmp:
        controlnet.save_pretrained(str(tmp), safe_serialization=True)
    return Path(out_dir).resolve()


def last_ckpt(run_dir: Path) -> Path:
    return ckpt_dir(Path(run_dir) / STAGE) / "last.ckpt"


def export_controlnet(cfg: ControlNetTrainConfig, run_dir: Path, prior=None, ckpt: Path | None = None) -> Path:
    """Write cfg.output_dir from a checkpoint (default run_dir/ckpts/controlnet/last.ckpt)."""
    from gen3d.diffusion.prior import load_prior

    prior = prior or load_prior(cfg.prior)
    ckpt = Path(ckpt or last_ckpt(run_dir))
    if not ckpt.is_file():
        raise UserError(f"no ControlNet checkpoint at {ckpt}")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    net = build_controlnet(prior.unet, cfg)
    net.load_state_dict({k[len("controlnet.") :]: v for k, v in state.items() if k.startswith("controlnet.")})
    return save_controlnet_atomic(net, cfg.output_dir)


def main(cfg: ControlNetTrainConfig, run_dir: Path, resume=False, export_only: bool = False) -> Path:
    """Train under run_dir (ckpts/controlnet/, controlnet/logs/, cached latents and canny maps), then
    write cfg.output_dir.

    resume: truthy continues from run_dir/ckpts/controlnet/last.ckpt (a checkpoint path is used as given);
    a run_dir that already holds last.ckpt is continued too (launch.py's `--resume RUN_DIR`).
    export_only: write cfg.output_dir from the checkpoint without training.
    """
    from gen3d.diffusion.prior import load_prior

    torch.set_num_threads(cfg.num_threads)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last = last_ckpt(run_dir)
    ckpt = Path(resume) if isinstance(resume, (str, Path)) and Path(resume).is_file() else last
    resume = bool(resume) or last.is_file()
    prior = load_prior(cfg.prior)
    check_cond_channels(prior, cfg)
    write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))  # what launch.py's --resume RUN_DIR reads
    if export_only:
        return export_controlnet(cfg, run_dir, prior, ckpt)
    t0 = time.time()
    data = render_dataset(cfg.data)
    mean, std = cached_latents({"vae": prior.vae}, data, run_dir, resume)
    canny = cached_canny(data, cfg, run_dir, resume)
    print(f"[controlnet] data: {len(mean)} images, latents + canny maps in {time.time() - t0:.0f}s", flush=True)
    ds = ControlledLatents(CaptionedImages(data, cfg.data, seed=cfg.seed), mean, std, canny)
    module = ControlNetModule(build_controlnet(prior.unet, cfg), prior, cfg)
    if ckpt != last and resume:  # an explicit checkpoint: make it the one fit_stage resumes from
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, last)
    t1 = time.time()
    fit_stage(
        cfg, module, make_loader(ds, cfg.batch_size, cfg.seed), run_dir / STAGE, cfg.steps, cfg.max_minutes, resume
    )
    print(f"[controlnet] training done in {time.time() - t1:.0f}s", flush=True)
    out = save_controlnet_atomic(module.controlnet, cfg.output_dir)
    print(f"[controlnet] saved {out} (total {time.time() - t0:.0f}s)", flush=True)
    return out


if __name__ == "__main__":
    # python -m gen3d.prior.controlnet [run_dir] [--resume | --export | --eval]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run = Path(args[0]) if args else Path(".cache/controlnet_run")
    cfg = ControlNetTrainConfig()
    if "--eval" in sys.argv:
        torch.set_num_threads(cfg.num_threads)
        from .controlnet_eval import evaluate_controlnet

        result = evaluate_controlnet(cfg.prior, cfg.output_dir, n_images=200, grid_path=run / "eval.png")
        write_text_atomic(run / "eval.json", __import__("json").dumps(result, indent=2))
        print(result)
    elif "--export" in sys.argv:
        print(main(cfg, run, resume=True, export_only=True))
    elif last_ckpt(run).exists() and "--resume" not in sys.argv:
        sys.exit(f"{run} already holds a checkpoint: pass --resume to continue it, or another run_dir")
    else:
        main(cfg, run, resume="--resume" in sys.argv)
