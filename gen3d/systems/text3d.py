"""Text-to-3D on an implicit volume: one Lightning module, configured per method.

One training step (read top to bottom in `training_step`): cameras (from the dataloader) ->
volume rendering -> view-dependent prompt embeddings -> guidance loss (SDS) + regularisers.
DreamFusion is this system with its config; later methods reuse it with other guidance /
geometry settings. The frozen prior is a plain attribute, never a submodule, so it stays out
of checkpoints, optimizers and DDP.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from gen3d.diffusion.prior import load_prior
from gen3d.diffusion.prompts import PromptConfig, PromptEmbeddings
from gen3d.errors import UserError
from gen3d.export.config import ExportConfig
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.guidance.sds import GuidanceConfig, SDSGuidance
from gen3d.render.background import BackgroundConfig, make_background
from gen3d.render.cameras import CameraConfig, Cameras, make_cameras, turntable
from gen3d.render.shading import pick_shading
from gen3d.render.volume import RendererConfig, VolumeRenderer
from gen3d.utils.schedule import schedule_value

log = logging.getLogger("gen3d")


@dataclass
class LossConfig:
    """Loss weights (each a schedule)."""

    sds: Any = 1.0
    orient: Any = 0.0  # penalise normals facing away from the camera (DreamFusion)
    sparsity: Any = 0.0  # mean opacity
    opaque: Any = 0.0  # binary cross-entropy pushing opacity to 0 or 1
    SCHEDULES = ("sds", "orient", "sparsity", "opaque")


@dataclass
class OptimConfig:
    lr: float = 0.01  # geometry (hash grid + MLPs)
    lr_background: float = 0.001
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15


@dataclass
class TrainerConfig:
    max_steps: int = 600
    batch_size: int = 1
    precision: str = "32-true"  # Lightning precision: 32-true, 16-mixed, bf16-mixed
    accelerator: str = "auto"  # auto | cpu | cuda
    devices: Any = 1
    checkpoint_every: int = 200
    preview_every: int = 100
    log_every: int = 10


@dataclass
class TurntableConfig:
    n_views: int = 60
    fps: int = 30
    elevation: float = 15.0
    distance: float = 2.3
    fovy: float = 50.0
    resolution: int = 128
    shading: str = "albedo"


@dataclass
class Text3DConfig:
    """Everything a text-to-3D run needs; methods ship YAML files that fill it in."""

    system: str = "dreamfusion"
    name: str = "dreamfusion"  # run directory: outputs/<name>/<prompt-slug>
    prompt: str = ""
    model: str = "builtin"
    seed: int = 0
    output: str = "outputs"
    device: str = "auto"  # auto | cpu | cuda
    prompt_processor: PromptConfig = field(default_factory=PromptConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    geometry: ImplicitVolumeConfig = field(default_factory=ImplicitVolumeConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


class RandomCameraDataset(torch.utils.data.Dataset):
    """Item i is a random camera drawn with a generator seeded by (seed, i): reproducible, and
    with a DistributedSampler each rank renders its own cameras."""

    def __init__(self, cfg: CameraConfig, length: int, seed: int):
        from gen3d.render.cameras import CameraSampler

        self.sampler, self.length, self.seed = CameraSampler(cfg), length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        cam = self.sampler.sample(1, generator=gen)
        return {k: v[0] for k, v in vars(cam).items() if torch.is_tensor(v)}


def batch_to_cameras(batch: dict, height: int, width: int) -> Cameras:
    return Cameras(height=height, width=width, **batch)


class Text3DSystem(L.LightningModule):
    def __init__(self, cfg: Text3DConfig, run_dir: Path | None = None):
        super().__init__()
        self.cfg, self.run_dir = cfg, run_dir
        self.geometry = ImplicitVolume(cfg.geometry)
        self.background = make_background(cfg.background)
        self.renderer = VolumeRenderer(cfg.renderer, self.geometry, self.background)
        self._prior = None  # plain attributes: not registered, not checkpointed
        self._prompts = None
        self._guidance = None
        self._rng = random.Random(cfg.seed)
        self.last_loss = float("nan")
        self.first_loss = None

    # ----- frozen prior (loaded on the right device, outside the module tree) ----------------
    def setup_prior(self) -> None:
        if self._prior is not None:
            return
        self._prior = load_prior(self.cfg.model, device=self.device)
        self._prompts = PromptEmbeddings(self._prior, self.cfg.prompt, self.cfg.prompt_processor)
        self._guidance = SDSGuidance(self._prior, self.cfg.guidance)

    def on_fit_start(self) -> None:
        self.setup_prior()

    # ----- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        cams = batch_to_cameras(batch, self.cfg.camera.height, self.cfg.camera.width)
        out = self.renderer(cams, shading=pick_shading(step, self.cfg.renderer.shading, self._rng))
        cond, uncond = self._prompts(cams.elevation, cams.azimuth)
        images = out["comp_rgb"].permute(0, 3, 1, 2)  # [B,3,H,W]
        g = self._guidance(images, cond, uncond, step)
        losses = {"sds": g["loss"]}
        opacity = out["opacity"].clamp(1e-5, 1 - 1e-5)
        losses["sparsity"] = opacity.mean()
        losses["opaque"] = -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean()
        if "orient_loss" in out:
            losses["orient"] = out["orient_loss"]
        total = sum(schedule_value(getattr(self.cfg.loss, k), step) * v for k, v in losses.items()
                    if schedule_value(getattr(self.cfg.loss, k), step))
        self.log("loss", total.detach(), prog_bar=True, batch_size=len(cams))
        self.log("t", g["t"].float().mean(), prog_bar=True, batch_size=len(cams))
        self.log("grad_norm", g["grad_norm"], batch_size=len(cams))
        self.last_loss = float(total.detach())
        if self.first_loss is None:
            self.first_loss = self.last_loss
        return total

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.renderer.update_step(self.global_step)

    def configure_optimizers(self):
        o = self.cfg.optimizer
        groups = [{"params": list(self.geometry.parameters()), "lr": o.lr}]
        bg = list(self.background.parameters())
        if bg:
            groups.append({"params": bg, "lr": o.lr_background})
        return torch.optim.Adam(groups, betas=tuple(o.betas), eps=o.eps)

    # ----- rendering for people ---------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, cams: Cameras, shading: str = "albedo", chunk: int = 4) -> dict:
        """Render cameras in chunks; returns rgb [N,H,W,3] and normal [N,H,W,3] on the CPU."""
        rgbs, normals = [], []
        for i in range(0, len(cams), chunk):
            out = self.renderer(cams[i:i + chunk].to(self.device), shading=shading)
            rgbs.append(out["comp_rgb"].float().cpu())
            normals.append((out["comp_normal"].float().cpu() * 0.5 + 0.5) * out["opacity"].float().cpu())
        return {"rgb": torch.cat(rgbs), "normal": torch.cat(normals)}

    def preview_cameras(self, size: int) -> Cameras:
        n = 4
        az = torch.tensor([0.0, 90.0, 180.0, -90.0])
        c = self.cfg.turntable
        return make_cameras(torch.full((n,), c.elevation), az, torch.full((n,), c.distance),
                            torch.full((n,), c.fovy), size, size)

    def turntable_cameras(self) -> Cameras:
        c = self.cfg.turntable
        return turntable(c.n_views, c.elevation, c.distance, c.fovy, c.resolution, c.resolution)

    # ----- export -----------------------------------------------------------------------------------
    def density_fn(self, points: torch.Tensor) -> torch.Tensor:
        return self.geometry.density(points.to(self.device)).float().cpu()

    def albedo_fn(self, points: torch.Tensor) -> torch.Tensor:
        return self.geometry.albedo(points.to(self.device)).float().cpu()


def check_config(cfg: Text3DConfig) -> None:
    """Cross-field checks that types alone cannot express (UserError on failure)."""
    if not cfg.prompt or not cfg.prompt.strip():
        raise UserError("the prompt is empty: pass --prompt \"a red cube\"")
    if cfg.trainer.max_steps < 0:
        raise UserError("trainer.max_steps must be >= 0")
    if cfg.guidance.type != "sds":
        raise UserError(f"guidance.type '{cfg.guidance.type}' is not available for this system (use 'sds')")


def validate(cfg: Text3DConfig) -> None:
    """Checks done before anything is written: config consistency, model and prompt."""
    from gen3d.diffusion.prior import resolve_model
    from gen3d.diffusion.prompts import check_vocabulary

    check_config(cfg)
    check_vocabulary(resolve_model(cfg.model), cfg.prompt)
