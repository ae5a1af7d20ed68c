"""Text-to-3D: one Lightning module, configured per method and per stage.

One training step (read top to bottom in `training_step`): cameras (from the dataloader) ->
render one particle (NeRF volume or textured mesh) -> view-dependent prompt embeddings ->
guidance (SDS or VSD) -> loss + regularisers. DreamFusion, Magic3D and ProlificDreamer are this
system with different configs (configs/*.yaml); multi-stage methods chain stages in the runner.
The frozen prior is a plain attribute, never a submodule: it stays out of checkpoints,
optimizers and DDP. The VSD LoRA is a submodule (it is trained and checkpointed).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch import nn

from gen3d.diffusion.prior import Prior, load_prior
from gen3d.diffusion.prompts import PromptConfig, PromptEmbeddings
from gen3d.errors import UserError
from gen3d.export.config import ExportConfig
from gen3d.geometry.implicit import ImplicitVolume, ImplicitVolumeConfig
from gen3d.geometry.mesh import MeshGeometry, MeshGeometryConfig
from gen3d.guidance.sds import SDSGuidance
from gen3d.guidance.vsd import VSDConfig, VSDGuidance
from gen3d.render.background import BackgroundConfig, make_background
from gen3d.render.cameras import CameraConfig, CameraSampler, Cameras, make_cameras, turntable
from gen3d.render.mesh_renderer import MeshRenderer, MeshRendererConfig
from gen3d.render.shading import pick_shading
from gen3d.render.volume import RendererConfig, VolumeRenderer
from gen3d.systems import latent_mode
from gen3d.utils.distributed import exclude_from_ddp, log_parameter_sync
from gen3d.utils.schedule import schedule_value

log = logging.getLogger("gen3d")

REPRESENTATIONS = ("volume", "mesh")


@dataclass
class LossConfig:
    """Loss weights (each a schedule). `guidance` weighs SDS/VSD; the LoRA loss always has weight 1."""

    guidance: Any = 1.0
    orient: Any = 0.0  # volume: normals facing away from the camera (DreamFusion)
    sparsity: Any = 0.0  # volume: mean opacity
    opaque: Any = 0.0  # volume: binary entropy pushing opacity to 0 or 1
    normal_consistency: Any = 0.0  # mesh: 1 - cos between adjacent face normals
    laplacian: Any = 0.0  # mesh: uniform Laplacian smoothing
    SCHEDULES = ("guidance", "orient", "sparsity", "opaque", "normal_consistency", "laplacian")


@dataclass
class OptimConfig:
    lr: float = 0.01  # volume field / mesh texture field
    lr_offsets: float = 1e-4  # mesh vertex offsets
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
class StageConfig:
    """One stage of a multi-stage method: a name and config overrides on top of the base config."""

    name: str = "main"
    overrides: dict[str, Any] = field(default_factory=dict)


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
    # weights of the frozen prior: auto = float16 on CUDA (as threestudio's half_precision_weights), float32 on CPU
    model_dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    representation: str = "volume"  # volume (NeRF) | mesh (rasterised, from the previous stage)
    particles: int = 1  # independent 3D models (VSD: sharing one LoRA)
    train_geometry: bool = True  # volume: the field; mesh: vertex offsets
    train_texture: bool = True  # mesh: the texture field
    force_shading: Optional[str] = None  # e.g. "normal" for a geometry-only mesh stage
    # NeRF albedo + background output the prior's latents, fed to the guidance without the VAE encoder
    # (Latent-NeRF); albedo shading only; previews/turntable decoded by the VAE (gen3d/systems/latent_mode.py)
    rgb_as_latents: bool = False
    prompt_processor: PromptConfig = field(default_factory=PromptConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    geometry: ImplicitVolumeConfig = field(default_factory=ImplicitVolumeConfig)
    mesh: MeshGeometryConfig = field(default_factory=MeshGeometryConfig)
    background: BackgroundConfig = field(default_factory=BackgroundConfig)
    renderer: RendererConfig = field(default_factory=RendererConfig)
    mesh_renderer: MeshRendererConfig = field(default_factory=MeshRendererConfig)
    guidance: VSDConfig = field(default_factory=lambda: VSDConfig(type="sds", guidance_scale=100.0,
                                                                  max_step_percent=0.98))
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stages: list[StageConfig] = field(default_factory=list)


class RandomCameraDataset(torch.utils.data.Dataset):
    """Item i is a random camera drawn with a generator seeded by (seed, i): reproducible, and
    with a DistributedSampler each rank renders its own cameras."""

    def __init__(self, cfg: CameraConfig, length: int, seed: int):
        self.sampler, self.length, self.seed = CameraSampler(cfg), length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        cam = self.sampler.sample(1, generator=gen)
        return {k: v[0] for k, v in vars(cam).items() if torch.is_tensor(v)}


def particles_of_rank(particles: int, rank: int, world: int) -> list[int]:
    """Global indices of the particles `rank` trains: all of them for one particle (data-parallel over
    cameras), else an equal share (UserError when they do not divide over the ranks)."""
    if particles == 1 or world == 1:
        return list(range(particles))
    if particles % world:
        raise UserError(f"--particles {particles} does not divide over {world} processes: use a multiple of {world} "
                        "(or 1 particle, trained data-parallel by all processes)")
    return list(range(rank, particles, world))


def batch_to_cameras(batch: dict, height: int, width: int) -> Cameras:
    return Cameras(height=height, width=width, **batch)


def make_scene(cfg: Text3DConfig, background: nn.Module, latent_channels: int | None = None) -> nn.Module:
    """One particle: its geometry inside its renderer (volume: NeRF; mesh: empty until initialised).
    latent_channels: the NeRF's albedo is that many latent channels (rgb_as_latents)."""
    if cfg.representation == "volume":
        return VolumeRenderer(cfg.renderer, ImplicitVolume(cfg.geometry, latent_channels), background)
    return MeshRenderer(cfg.mesh_renderer, MeshGeometry(mesh_config(cfg)), background)


def mesh_config(cfg: Text3DConfig) -> MeshGeometryConfig:
    """The mesh's texture field has the NeRF's architecture so it starts from the NeRF's weights."""
    return replace(cfg.mesh, texture=cfg.geometry, radius=cfg.geometry.radius)


def run_device(cfg: Text3DConfig) -> str:
    """'cuda' or 'cpu': where this run trains (--device / trainer.accelerator; auto = CUDA if present)."""
    want = cfg.device if cfg.device != "auto" else cfg.trainer.accelerator
    return "cuda" if want in ("cuda", "gpu") or (want == "auto" and torch.cuda.is_available()) else "cpu"


def resolve_backends(cfg: Text3DConfig) -> Text3DConfig:
    """A CPU run on a CUDA machine must not pick the CUDA-only backends that `auto` would choose."""
    if run_device(cfg) == "cuda":
        return cfg

    def off(value: str, cpu: str) -> str:
        return cpu if value == "auto" else value

    return replace(cfg, geometry=replace(cfg.geometry, encoding_backend=off(cfg.geometry.encoding_backend, "torch")),
                   renderer=replace(cfg.renderer, use_nerfacc=off(cfg.renderer.use_nerfacc, "never")),
                   mesh_renderer=replace(cfg.mesh_renderer, backend=off(cfg.mesh_renderer.backend, "torch")))


class Text3DSystem(L.LightningModule):
    def __init__(self, cfg: Text3DConfig, prior: Prior | None = None):
        super().__init__()
        self.cfg = cfg = resolve_backends(cfg)
        latents = latent_mode.latent_channels(cfg, prior)  # None: RGB
        self.background = make_background(cfg.background, latents)
        # particles by global index ("0", "1", ...); under DDP each rank keeps only its own (setup)
        self.scenes = nn.ModuleDict({str(i): make_scene(cfg, self.background, latents) for i in range(cfg.particles)})
        self._prior = prior  # plain attributes: not registered, not checkpointed
        self._prompts = self._guidance = None
        self.vsd_lora = None  # set in setup_prior for VSD: trainable, checkpointed
        self._rng = random.Random(cfg.seed)
        self.first_loss, self.last_loss = None, float("nan")
        if cfg.guidance.type == "vsd" and prior is not None:
            self.setup_prior()

    # ----- frozen prior and guidance ------------------------------------------------------------
    def setup_prior(self, device: torch.device | str | None = None) -> None:
        """Load the prior (once) and build prompt embeddings and guidance on `device`."""
        if self._guidance is not None:
            return
        if self._prior is None:
            device = torch.device(device or self.device)
            self._prior = load_prior(self.cfg.model, device=device, dtype=prior_dtype(self.cfg.model_dtype, device))
        self._prompts = PromptEmbeddings(self._prior, self.cfg.prompt, self.cfg.prompt_processor)
        if self.cfg.guidance.type == "vsd":
            self._guidance = VSDGuidance(self._prior, self.cfg.guidance, lora=getattr(self._prior, "vsd_lora", None))
            self._prior.vsd_lora = self._guidance.lora  # later stages on this prior continue the same LoRA
            self.vsd_lora = self._guidance.lora
        else:
            self._guidance = SDSGuidance(self._prior, self.cfg.guidance)

    def setup(self, stage: str) -> None:  # Lightning hook: before checkpoint restore, optimizers and DDP
        # rank 0 fills the text-embedding cache while the others wait, then they read it
        if self.trainer.global_rank == 0:
            self.setup_prior(self.trainer.strategy.root_device)
        self.trainer.strategy.barrier("gen3d-prior")
        self.setup_prior(self.trainer.strategy.root_device)
        self.keep_particles(particles_of_rank(self.cfg.particles, self.trainer.global_rank, self.trainer.world_size))
        exclude_from_ddp(self, self.ddp_local_names())

    # ----- particles over ranks -----------------------------------------------------------------------
    def particle_ids(self) -> list[int]:
        """Global indices of the particles this process holds."""
        return sorted(int(k) for k in self.scenes)

    def scene(self, particle: int) -> nn.Module:
        return self.scenes[str(particle)]

    def keep_particles(self, ids: list[int]) -> None:
        """Drop the particles other ranks own (before DDP wraps the module)."""
        for key in [k for k in self.scenes if int(k) not in ids]:
            del self.scenes[key]

    def ddp_local_names(self) -> list[str]:
        """Parameters and buffers DDP must neither all-reduce nor broadcast: this rank's own particles'
        (when particles are spread over ranks; one particle is trained data-parallel by all ranks)."""
        if self.cfg.particles == 1:
            return []
        return [f"scenes.{n}" for n, _ in self.scenes.named_parameters()] + \
               [f"scenes.{n}" for n, _ in self.scenes.named_buffers()]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every rank calls this: gather all particles (and each rank's optimizer state) into the
        checkpoint that rank 0 writes, so it holds the whole run whatever the number of ranks."""
        trainer = self._trainer
        if trainer is None or trainer.world_size < 2 or self.cfg.particles == 1:
            return
        import torch.distributed as dist

        mine = {k: v.detach().cpu() for k, v in checkpoint["state_dict"].items() if k.startswith("scenes.")}
        every = [None] * trainer.world_size
        dist.all_gather_object(every, (mine, checkpoint.get("optimizer_states")))
        for states, _ in every:
            checkpoint["state_dict"].update(states)
        checkpoint["gen3d_rank_optimizer_states"] = [opt for _, opt in every]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep this rank's particles of a checkpoint that holds all of them; its own optimizer state
        when the number of ranks is unchanged, else fresh Adam moments (logged)."""
        local = {f"scenes.{k}." for k in self.scenes}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("scenes.") or any(k.startswith(p) for p in local)}
        per_rank = checkpoint.pop("gen3d_rank_optimizer_states", None)
        trainer, world = self._trainer, self._trainer.world_size if self._trainer is not None else 1
        if trainer is None or "optimizer_states" not in checkpoint:
            return
        if per_rank is not None and len(per_rank) == world:
            checkpoint["optimizer_states"] = per_rank[trainer.global_rank]
        elif per_rank is not None or (world > 1 and self.cfg.particles > 1):
            log.warning("resuming %d particles on %d process(es) from a run with another layout: optimizer "
                        "moments restart", self.cfg.particles, world)
            checkpoint["optimizer_states"] = [self.configure_optimizers().state_dict()]

    def on_train_end(self) -> None:
        log_parameter_sync(self, local=self.ddp_local_names(), particles=self.particle_ids())

    def init_from(self, prev: "Text3DSystem") -> None:
        """Start this stage from the previous stage's trained particles (NeRF -> mesh, mesh -> mesh)."""
        if prev.cfg.particles != self.cfg.particles:
            raise UserError(f"stage has {self.cfg.particles} particles but the previous stage has {prev.cfg.particles}")
        self.background.load_state_dict(prev.background.state_dict())
        self.keep_particles(prev.particle_ids())  # the previous stage may hold only this rank's particles
        for key, scene in self.scenes.items():
            old = prev.scenes[key]
            if isinstance(scene, MeshRenderer) and isinstance(old, VolumeRenderer):
                scene.geometry = MeshGeometry.from_implicit(old.geometry, mesh_config(self.cfg))
            else:
                scene.geometry.load_state_dict(old.geometry.state_dict())
        self._prior = self._prior or prev._prior

    # ----- training ---------------------------------------------------------------------------------
    def particle_index(self, step: int) -> int:
        """Round-robin over the particles this rank holds (global index)."""
        ids = self.particle_ids()
        return ids[step % len(ids)]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg, step = self.cfg, self.global_step
        cams = batch_to_cameras(batch, cfg.camera.height, cfg.camera.width)
        scene = self.scene(self.particle_index(step))
        shading = cfg.force_shading or pick_shading(step, scene.cfg.shading, self._rng)
        shading = "albedo" if cfg.rgb_as_latents else shading  # lighting latents means nothing
        out = scene(cams, shading=shading)
        cond, uncond = self._prompts(cams.elevation, cams.azimuth)
        images = out["comp_rgb"].permute(0, 3, 1, 2)  # [B,3,H,W]; rgb_as_latents: latents [B,C,H,W]
        guide = self._guidance.loss_from_latents if cfg.rgb_as_latents else self._guidance
        if cfg.guidance.type == "vsd":
            g = guide(images, cond, uncond, step, c2w=cams.c2w)
        else:
            g = guide(images, cond, uncond, step)
        terms = {"guidance": g["loss"], **self.regularisers(scene, out)}
        total = sum(w * terms[k] for k in terms if (w := schedule_value(getattr(cfg.loss, k), step)))
        if "loss_lora" in g:
            total = total + g["loss_lora"]
            self.log("loss_lora", g["loss_lora"].detach(), batch_size=len(cams))
        self.log("loss", total.detach(), prog_bar=True, batch_size=len(cams))
        self.log("t", g["t"].float().mean(), prog_bar=True, batch_size=len(cams))
        self.log("grad_norm", g["grad_norm"], batch_size=len(cams))
        self.last_loss = float(total.detach())
        self.first_loss = self.last_loss if self.first_loss is None else self.first_loss
        return total

    def regularisers(self, scene: nn.Module, out: dict) -> dict:
        if isinstance(scene, MeshRenderer):
            return {"normal_consistency": scene.geometry.normal_consistency(),
                    "laplacian": scene.geometry.laplacian_smoothing()}
        opacity = out["opacity"].clamp(1e-5, 1 - 1e-5)
        terms = {"sparsity": opacity.mean(),
                 "opaque": -(opacity * opacity.log() + (1 - opacity) * (1 - opacity).log()).mean()}
        if "orient_loss" in out:
            terms["orient"] = out["orient_loss"]
        return terms

    def on_train_batch_start(self, batch, batch_idx) -> None:
        for scene in self.scenes.values():
            scene.update_step(self.global_step)

    def configure_optimizers(self):
        o, cfg = self.cfg.optimizer, self.cfg
        groups = []
        for scene in self.scenes.values():
            geo = scene.geometry
            if isinstance(geo, MeshGeometry):
                if cfg.train_geometry and geo.offsets.numel():
                    groups.append({"params": [geo.offsets], "lr": o.lr_offsets})
                if cfg.train_texture:
                    groups.append({"params": list(geo.texture.parameters()), "lr": o.lr})
            elif cfg.train_geometry:
                groups.append({"params": list(geo.parameters()), "lr": o.lr})
        if list(self.background.parameters()):
            groups.append({"params": list(self.background.parameters()), "lr": o.lr_background})
        if self.vsd_lora is not None:
            groups.append({"params": list(self.vsd_lora.parameters()), "lr": cfg.guidance.lora_lr})
        self.freeze_untrained({id(p) for g in groups for p in g["params"]})
        return torch.optim.Adam(groups, betas=tuple(o.betas), eps=o.eps)

    def freeze_untrained(self, trained: set[int]) -> None:
        for p in self.parameters():
            p.requires_grad_(id(p) in trained)

    # ----- rendering for people ---------------------------------------------------------------------
    @torch.no_grad()
    def render_views(self, cams: Cameras, particle: int = 0, shading: str = "albedo", chunk: int = 4) -> dict:
        """Render cameras in chunks; returns rgb [N,H,W,3], normal [N,H,W,3] and opacity [N,H,W,1] on the
        CPU. rgb_as_latents: rendered at the latent size with albedo shading, rgb decoded by the prior's
        VAE, plus the rendered latents [N,h,w,C] (`latent_mode.decode_views`)."""
        if self.cfg.rgb_as_latents:
            self.setup_prior()  # the VAE decodes what people see (e.g. --export-only loads no prior otherwise)
            cams, shading = latent_mode.latent_cameras(cams, self._prior), "albedo"
        scene, was_training = self.scene(particle), self.training
        self.eval()  # deterministic: no sample jitter, no random background
        rgbs, normals, opacities = [], [], []
        for i in range(0, len(cams), chunk):
            out = scene(cams[i:i + chunk].to(self.device), shading=shading, with_normal=True)
            rgbs.append(out["comp_rgb"].float().cpu())
            opacities.append(out["opacity"].float().cpu())
            normals.append((out["comp_normal"].float().cpu() * 0.5 + 0.5) * opacities[-1])
        self.train(was_training)
        views = {"rgb": torch.cat(rgbs), "normal": torch.cat(normals), "opacity": torch.cat(opacities)}
        return latent_mode.decode_views(self._prior, views) if self.cfg.rgb_as_latents else views

    def preview_cameras(self, size: int) -> Cameras:
        az = torch.tensor([0.0, 90.0, 180.0, -90.0])
        c = self.cfg.turntable
        return make_cameras(torch.full((4,), c.elevation), az, torch.full((4,), c.distance),
                            torch.full((4,), c.fovy), size, size)

    def turntable_cameras(self) -> Cameras:
        c = self.cfg.turntable
        return turntable(c.n_views, c.elevation, c.distance, c.fovy, c.resolution, c.resolution)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def prior_dtype(name: str, device: torch.device) -> torch.dtype:
    """model_dtype -> torch dtype; auto: float16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"model_dtype must be auto, {', '.join(DTYPES)} (got '{name}')")
    return DTYPES[name]


def check_config(cfg: Text3DConfig) -> None:
    """Cross-field checks that types alone cannot express (UserError on failure)."""
    if not cfg.prompt or not cfg.prompt.strip():
        raise UserError("the prompt is empty: pass --prompt \"a red cube\"")
    if cfg.trainer.max_steps < 0:
        raise UserError("trainer.max_steps must be >= 0")
    if cfg.particles < 1:
        raise UserError(f"--particles must be at least 1 (got {cfg.particles})")
    if cfg.guidance.type not in ("sds", "vsd"):
        raise UserError(f"guidance.type must be 'sds' or 'vsd' (got '{cfg.guidance.type}')")
    prior_dtype(cfg.model_dtype, torch.device("cpu"))  # UserError for an unknown model_dtype
    if cfg.representation not in REPRESENTATIONS:
        raise UserError(f"representation must be one of {', '.join(REPRESENTATIONS)} (got '{cfg.representation}')")
    latent_mode.check_config(cfg)


def validate(cfg: Text3DConfig, run_dir: Path | None = None, stage: str | None = None,
             from_run: Path | None = None) -> None:
    """Checks done before anything is written: every stage's config, --stage/--from, the model
    and the prompt."""
    from gen3d.diffusion.prior import resolve_model
    from gen3d.diffusion.prompts import check_vocabulary
    from gen3d.systems.runner import start_point
    from gen3d.utils.distributed import world_size

    stages, _, _ = start_point(cfg, run_dir, stage, from_run)
    particles_of_rank(cfg.particles, 0, world_size(cfg.trainer.devices))  # they must divide over the processes
    if cfg.stages and cfg.stages[0].overrides.get("representation", cfg.representation) == "mesh":
        raise UserError("the first stage must be a volume (NeRF) stage: mesh stages start from one")
    latent_mode.check_stages([stage_cfg for _, stage_cfg in stages])  # rgb_as_latents: VAE etc.
    check_vocabulary(resolve_model(cfg.model), cfg.prompt)
