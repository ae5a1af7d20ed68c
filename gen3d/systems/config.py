"""The text-to-3D config (`Text3DConfig`): every method (configs/dreamfusion.yaml, ...) fills it in.

Which parts a stage uses is named here and looked up in the registries: `representation`
(gen3d.representations), `guidance.type` (gen3d.guidance; the `guidance:` section is typed by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from gen3d.config import typed_section
from gen3d.diffusion.prompts import PromptConfig
from gen3d.export.config import ExportConfig
from gen3d.geometry.implicit import ImplicitVolumeConfig
from gen3d.geometry.mesh import MeshGeometryConfig
from gen3d.guidance import guidance_config
from gen3d.render.background import BackgroundConfig
from gen3d.render.cameras import CameraConfig
from gen3d.render.mesh_renderer import MeshRendererConfig
from gen3d.render.volume import RendererConfig
from gen3d.utils.device import run_device


@dataclass
class LossConfig:
    """Loss weights (each a schedule), by the name of the term: `guidance` weighs the guidance's `loss`,
    the others the representations' regularisers; a guidance's own `loss_*` terms have weight 1."""

    guidance: Any = 1.0
    orient: Any = 0.0  # volume: normals facing away from the camera (DreamFusion)
    sparsity: Any = 0.0  # volume: mean opacity
    opaque: Any = 0.0  # volume: binary entropy pushing opacity to 0 or 1
    normal_consistency: Any = 0.0  # mesh: 1 - cos between adjacent face normals
    laplacian: Any = 0.0  # mesh: uniform Laplacian smoothing
    # weights of other parts' terms by name (a new representation's regulariser), each a schedule
    other: dict[str, Any] = field(default_factory=dict)
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
    """Lightning Trainer settings (where the run trains is the top-level `device`)."""

    max_steps: int = 600
    batch_size: int = 1
    precision: str = "32-true"  # Lightning precision: 32-true, 16-mixed, bf16-mixed
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

    system: str = "text3d"  # the system (gen3d.cli.SYSTEMS); older configs name their method here
    name: str = "dreamfusion"  # the method: run directory outputs/<name>/<prompt-slug>
    prompt: str = ""
    model: str = "builtin"
    seed: int = 0
    output: str = "outputs"
    device: str = "auto"  # auto | cpu | cuda (--device); the Lightning accelerator
    num_threads: int = 0  # torch CPU threads: 0 = auto, from the free cores (gen3d/utils/threads.py)
    # experiment logs under the run directory: tensorboard, csv, wandb (a name or a list), or none
    logger: Any = field(default_factory=lambda: ["tensorboard", "csv"])
    # weights of the frozen prior: auto = float16 on CUDA (as threestudio's half_precision_weights), float32 on CPU
    model_dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    representation: str = "volume"  # gen3d.representations: volume (NeRF) | mesh (from the previous stage)
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
