"""The text-to-3D config (`Text3DConfig`): every method (configs/dreamfusion.yaml, ...) fills it in.

Which parts a stage uses is named here and looked up in the registries: `representation`
(gen3d.representations), `guidance.type` (gen3d.guidance; the `guidance:` section is typed by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from gen3d.config import DEVICES, NAME, NAME_DOC, PRECISIONS, ranged, typed_section
from gen3d.diffusion.prompts import PromptConfig
from gen3d.export.config import ExportConfig
from gen3d.geometry.implicit import ImplicitVolumeConfig
from gen3d.geometry.mesh import MeshGeometryConfig
from gen3d.guidance import guidance_config
from gen3d.render.background import BackgroundConfig
from gen3d.render.cameras import CameraConfig
from gen3d.render.mesh_renderer import MESH_SHADING_MODES, MeshRendererConfig
from gen3d.render.volume import RendererConfig
from gen3d.utils.device import run_device

MAX_SEED = 2**32 - 1 - 4096  # Lightning seeds each process with seed + rank (< 2**32)
MAX_PARTICLES = 256  # a declared bound; the memory estimate usually refuses far fewer


@dataclass
class LossConfig:
    """Loss weights (each a schedule), by the name of the term: `guidance` weighs the guidance's `loss`,
    the others the representations' regularisers; a guidance's own `loss_*` terms have weight 1."""

    guidance: Any = ranged(1.0, ge=0)
    orient: Any = ranged(0.0, ge=0)  # volume: normals facing away from the camera (DreamFusion)
    sparsity: Any = ranged(0.0, ge=0)  # volume: mean opacity
    opaque: Any = ranged(0.0, ge=0)  # volume: binary entropy pushing opacity to 0 or 1
    normal_consistency: Any = ranged(0.0, ge=0)  # mesh: 1 - cos between adjacent face normals
    laplacian: Any = ranged(0.0, ge=0)  # mesh: uniform Laplacian smoothing
    albedo_smooth: Any = ranged(0.0, ge=0)  # mesh: texture speckle at mesh.albedo_smooth_points surface points
    # weights of other parts' terms by name (a new representation's regulariser), each a schedule
    other: dict[str, Any] = field(default_factory=dict)
    SCHEDULES = ("guidance", "orient", "sparsity", "opaque", "normal_consistency", "laplacian", "albedo_smooth")


@dataclass
class OptimConfig:
    lr: float = ranged(0.01, ge=0)  # volume field / mesh texture field
    lr_offsets: float = ranged(1e-4, ge=0)  # mesh vertex offsets
    lr_background: float = ranged(0.001, ge=0)
    betas: tuple[float, float] = ranged((0.9, 0.99), ge=0, lt=1)
    eps: float = ranged(1e-15, ge=0)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (where the run trains is the top-level `device`)."""

    max_steps: int = ranged(600, ge=0)
    batch_size: Any = ranged(
        1, ge=1, le=1024
    )  # cameras per step; a schedule (e.g. {milestones: [5000], values: [4, 1]})
    precision: str = ranged("32-true", choices=PRECISIONS)  # Lightning precision: 32-true, 16-mixed, bf16-mixed
    devices: Any = 1
    checkpoint_every: int = ranged(200, ge=0)  # 0: only the last checkpoint
    keep_checkpoints: int = ranged(0, ge=0)  # step-*.ckpt files kept per stage (the newest ones); 0: all
    max_bad_steps: int = ranged(20, ge=0)  # stop after this many steps in a row with non-finite guidance (0: never)
    preview_every: int = ranged(100, ge=0)  # 0: no previews
    log_every: int = ranged(10, ge=0)
    SCHEDULES = ("batch_size",)


@dataclass
class TurntableConfig:
    n_views: int = ranged(60, ge=1, le=3600)
    fps: int = ranged(30, ge=1, le=240)
    elevation: float = ranged(15.0, ge=-90, le=90)
    distance: float = ranged(2.3, gt=0)
    fovy: float = ranged(50.0, gt=0, lt=180)
    resolution: int = ranged(128, ge=8, le=8192)
    shading: str = ranged("albedo", choices=MESH_SHADING_MODES)


@dataclass
class StageConfig:
    """One stage of a multi-stage method: a name and config overrides on top of the base config."""

    name: str = "main"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Text3DConfig:
    """Everything a text-to-3D run needs; methods ship YAML files that fill it in."""

    system: str = "text3d"  # the system (gen3d.cli.SYSTEMS); older configs name their method here
    # the method: run directory outputs/<name>/<prompt-slug>
    name: str = ranged("dreamfusion", pattern=NAME, doc=NAME_DOC)
    prompt: str = ""
    model: str = "builtin"
    # prior profile (gen3d.profiles): auto (builtin for the builtin prior, else sd) | builtin | sd
    profile: str = "auto"
    seed: int = ranged(0, ge=0, le=MAX_SEED)
    output: str = ranged("outputs", pattern=r"(?s).*\S.*", doc="a folder path (not empty)")
    device: str = ranged("auto", choices=DEVICES)  # auto | cpu | cuda (--device); the Lightning accelerator
    num_threads: int = ranged(
        0, ge=0, le=1024
    )  # torch CPU threads: 0 = auto, from the free cores (gen3d/utils/threads.py)
    # experiment logs under the run directory: tensorboard, csv, wandb (a name or a list), or none
    logger: Any = field(default_factory=lambda: ["tensorboard", "csv"])
    # weights of the frozen prior: auto = float16 on CUDA (as threestudio's half_precision_weights), float32 on CPU
    model_dtype: str = ranged("auto", choices=("auto", "float32", "float16", "bfloat16"))
    representation: str = "volume"  # gen3d.representations: volume (NeRF) | mesh (from the previous stage)
    # independent 3D models (VSD: sharing one LoRA); memory is checked before a run (gen3d/systems/memory.py)
    particles: int = ranged(1, ge=1, le=MAX_PARTICLES)
    train_geometry: bool = True  # volume: the field; mesh: vertex offsets
    train_texture: bool = True  # mesh: the texture field
    force_shading: Optional[str] = ranged(
        None, choices=MESH_SHADING_MODES
    )  # e.g. "normal" for a geometry-only mesh stage
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
    # typed by guidance.type: GuidanceConfig for sds, VSDConfig for vsd, ... (gen3d.guidance.GUIDANCES)
    guidance: Any = typed_section(guidance_config, default="sds")
    # settings of registered parts without a section above, by part name (checked by that part)
    parts: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    turntable: TurntableConfig = field(default_factory=TurntableConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    stages: list[StageConfig] = field(default_factory=list)
    MOVED_KEYS = {"trainer.accelerator": "device"}
    STEPPED = ("force_shading",)  # read at every step: may be a step schedule (gen3d.config)


def resolve_backends(cfg: Text3DConfig) -> Text3DConfig:
    """A CPU run on a CUDA machine must not pick the CUDA-only backends that `auto` would choose."""
    if run_device(cfg) == "cuda":
        return cfg

    def off(value: str, cpu: str) -> str:
        return cpu if value == "auto" else value

    return replace(
        cfg,
        geometry=replace(cfg.geometry, encoding_backend=off(cfg.geometry.encoding_backend, "torch")),
        renderer=replace(cfg.renderer, use_nerfacc=off(cfg.renderer.use_nerfacc, "never")),
        mesh_renderer=replace(cfg.mesh_renderer, backend=off(cfg.mesh_renderer.backend, "torch")),
    )
