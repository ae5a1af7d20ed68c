"""Typed config of the video-editing system (Tune-A-Video and ControlVideo differ in YAML only: ControlVideo
names `control:` maps and its own inflation settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from gen3d.config import DEVICES, NAME, NAME_DOC, PRECISIONS, ranged

CPU_DEFAULT_SIZE = 256  # size=0 on the CPU: min(native, this); Stable Diffusion's 512 px is ~4x the work


@dataclass
class VideoTrainerConfig:
    """Fine-tuning on the one input video (Lightning Trainer settings)."""

    max_steps: int = ranged(300, ge=0)
    lr: float = ranged(3e-5, ge=0)
    weight_decay: float = ranged(1e-2, ge=0)
    # auto: follows model_dtype (float32 -> 32-true, float16 -> 16-mixed, bfloat16 -> bf16-mixed); a half-precision
    # prior needs a mixed precision (its fine-tuned parameters stay float32 under autocast)
    precision: str = ranged("auto", choices=("auto", *PRECISIONS))  # auto | 32-true | 16-mixed | bf16-mixed
    devices: Any = 1
    gradient_checkpointing: bool = False
    checkpoint_every: int = ranged(100, ge=0)
    keep_checkpoints: int = ranged(
        2, ge=0
    )  # step-*.ckpt files kept (the newest; fine-tuned weights + AdamW state); 0: all
    log_every: int = ranged(25, ge=0)


@dataclass
class InflationConfig:
    """How the 2D UNet becomes a video UNet, and which of its parameters are fine-tuned."""

    spatial: str = ranged(
        "sparse_causal", choices=("sparse_causal", "key_frame", "self")
    )  # self-attention across frames: sparse_causal | key_frame | self
    key_frame: int = ranged(0, ge=0)  # the frame every frame attends to (key_frame mode)
    temporal: str = ranged(
        "tuneavideo", choices=("tuneavideo", "controlvideo", "none")
    )  # temporal module after attn1: tuneavideo | controlvideo | none
    # parameter-name substrings of the modules to train (matched against unet.named_parameters())
    trainable: list[str] = field(default_factory=lambda: ["attn1.to_q", "attn2.to_q", "temporal"])


@dataclass
class SamplingConfig:
    inversion_steps: int = ranged(50, ge=1, le=1000)
    steps: int = ranged(50, ge=1, le=1000)  # sampling steps (the inverted latents are used at the same timesteps)
    guidance_scale: float = ranged(12.5, ge=0)
    negative_prompt: str = ""
    invert: bool = True  # False: start sampling from fresh noise (seeded) instead of inverted latents
    # fraction of the sampling steps (the first, noisiest ones) in which the edit reuses the spatial
    # self-attention weights of a source branch denoised alongside it (needs invert); 0: off, as in the papers
    source_attention: float = ranged(0.0, ge=0, le=1)
    # CFG's unconditional prompt is the source caption (negative-prompt inversion, Miyake et al. 2023):
    # guidance pushes from the source towards the edit, and an edit equal to the source is not guided away
    negative_prompt_inversion: bool = True
    # the source branch follows the inversion's stored latents and the edit gets the inversion's per-step
    # error as well (an edit equal to the source caption returns the source latents exactly)
    exact_inversion: bool = True
    # the result is the source frames plus the change the edit makes to the decoded frames (inside the
    # local-edit mask): the VAE's own error on the source stays out (needs invert)
    pixel_residual: bool = True


@dataclass
class LocalEditConfig:
    """Local editing: outside the region of the words that differ, the edit keeps the source's latents
    (video.blend; docs/video.md "Local editing")."""

    enabled: bool = True  # false: the whole frame follows the edit prompt
    # noise difference (DiffEdit): |eps(edit) - eps(source)| at these noise levels (fractions of the
    # schedule), `draws` noise draws each, normalised by the video's largest value
    difference: bool = True
    strengths: list[float] = ranged(factory=lambda: [0.3, 0.5, 0.7], gt=0, lt=1)
    draws: int = ranged(4, ge=1)
    # region: (1 - w) * difference + w * attention above difference_threshold, in the connected parts
    # where the difference reaches seed * the frame's largest value
    difference_threshold: float = ranged(0.4, ge=0, le=1)
    seed: float = ranged(0.75, ge=0, le=1)
    attention_weight: float = ranged(0.2, ge=0, le=1)  # w: the share of the differing words' cross-attention
    threshold: float = ranged(0.6, ge=0, le=1)  # a word's min-max normalised attention above this is its place
    # a word whose place exceeds this share of the frame names no place: left out
    max_cover: float = ranged(0.5, ge=0, le=1)
    layers: str = "up_blocks"  # the cross-attention layers read (name substring; their finest resolution)
    dilate: int = ranged(1, ge=0)  # latent cells added around the region for the latent blend (max-pool radius)
    # latent cells within this many of the noise difference's region join it where most of their source pixels
    # look like the region's core (colour models of `appearance`; video.region.colour_grow): completes the
    # region where the difference is weak on part of the object, e.g. one leaving the picture (0: off)
    grow: int = ranged(0, ge=0)
    # CFG scale while the region keeps the background (0: sampling.guidance_scale): stronger guidance is safe
    # there and changes the object's colour in more frames
    guidance_scale: float = ranged(12.5, ge=0)
    # true: while the region of the differing words keeps the background, CFG's unconditional prompt is
    # sampling.negative_prompt, not the source caption (negative-prompt inversion pushes away from the source's
    # words); an edit equal to the source has an empty region and stays exact. Off by default: on the bench
    # it helped green -> purple and cost blue -> red (docs/video.md)
    plain_guidance: bool = False
    # true: as plain_guidance, but CFG's unconditional prompt is the source caption without the words that differ
    # from the edit ("a green cylinder" -> "a purple cylinder": "a cylinder"): guidance towards the edit's words,
    # neither away from the source's nor from an empty prompt
    common_guidance: bool = False
    # with common_guidance: CFG's unconditional embedding is (1 - mix) * that caption's + mix * the source
    # caption's (1: negative-prompt inversion again)
    common_mix: float = ranged(0.0, ge=0, le=1)
    # with plain_guidance / common_guidance: the fraction of the sampling steps (the first) that use it; negative-prompt
    # inversion in the rest (1: all steps)
    plain_steps: float = ranged(1.0, ge=0, le=1)
    # Prompt-to-Prompt re-weighting: the edit's cross-attention probabilities of the edit prompt's differing
    # words are multiplied by this inside the region of the differing words (1: off)
    reweight: float = ranged(1.0, ge=0, le=100)
    # inside the region of the differing words as it is before the first step (the noise difference, dilated),
    # the edit starts from sqrt(1 - r) * the inverted latents + sqrt(r) * fresh seeded noise (Blended Latent
    # Diffusion): the inverted noise holds the source's colour there (0: off)
    renoise: float = ranged(0.0, ge=0, le=1)
    snap: bool = True  # the pixel mask follows the source frames' edges (guided filter); false for shape edits
    # with snap: the region's parts whose source colours are nearer to the outside's than to the colours where
    # the noise difference peaks are dropped from the pixel mask (video.region.appearance_split)
    appearance: bool = True


@dataclass
class MetricsConfig:
    # CLIP (transformers CLIPModel) for text alignment: a local folder or a hub id (fetched on first use);
    # None: a local Hugging Face cache hit for openai/clip-vit-large-patch14 (or -base-patch32), never the network
    clip_model: Optional[str] = None
    classifier: str = "extern/builtin-classifier"  # builtin prior's shape/colour classifier (builtin prior only)


@dataclass
class VideoEditConfig:
    """Everything a video-editing run needs; configs/tuneavideo.yaml and controlvideo.yaml fill it in."""

    # keys that moved: naming the old one is an error naming the new one (gen3d.config)
    MOVED_KEYS = {"trainer.accelerator": "device", "trainer.num_threads": "num_threads"}

    system: str = "video"  # the video-editing system (tuneavideo | controlvideo: older names of it)
    name: str = ranged("tuneavideo", pattern=NAME, doc=NAME_DOC)  # run directory: outputs/<name>/<prompt-slug>
    model: str = "builtin"
    # prior profile (gen3d.profiles): auto (builtin for the builtin prior, else sd) | builtin | sd
    profile: str = "auto"
    prompt: str = ""  # caption of the source video
    edit: list[str] = field(default_factory=list)  # edited prompts; each gives edit-<i>.mp4
    video: str = ""  # .mp4, .gif or a folder of frames
    frames: int = ranged(8, ge=2, le=1024)  # number of frames used
    stride: int = ranged(1, ge=1)  # use every stride-th frame
    start: int = ranged(0, ge=0)  # first frame used
    # square working resolution in pixels; 0: the prior's native size on CUDA (512 for SD 1.5 / 2.1-base, 64 for
    # builtin), at most CPU_DEFAULT_SIZE on the CPU (video.run.working_size)
    size: int = ranged(0, ge=0, le=4096)
    fps: float = ranged(0.0, ge=0, le=1000)  # frame rate of folder inputs (0: 8); mp4/gif keep theirs
    control: list[str] = field(default_factory=list)  # ControlVideo: "canny", "canny:0.7", "depth:0.5"
    # --controlnet: a ControlNet folder / hub id, "canny=PATH", "canny=PATH,depth=PATH", or a list of those
    # (video.controlnets); with the builtin prior canny defaults to the shipped one
    controlnet: Any = None
    depth_model: Optional[str] = None  # transformers depth-estimation model folder (for control "depth")
    canny_low: float = ranged(0.1, ge=0, le=1)  # kornia canny thresholds (on [0,1] gradient magnitudes)
    canny_high: float = ranged(0.2, ge=0, le=1)
    mask: Optional[str] = None  # the user's region to edit (video / folder, white = edit): replaces local's
    seed: int = ranged(33, ge=0, le=2**32 - 1 - 4096)
    output: str = ranged("outputs", pattern=r"(?s).*\S.*", doc="a folder path (not empty)")
    device: str = ranged("auto", choices=DEVICES)  # auto | cpu | cuda (also the Lightning accelerator)
    # weights of the frozen prior (and ControlNets): auto = float16 on CUDA, float32 on the CPU; float16 is
    # refused on the CPU (use bfloat16 there to halve the memory)
    model_dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    num_threads: int = ranged(
        0, ge=0, le=1024
    )  # torch CPU threads: 0 = auto, from the free cores (gen3d/utils/threads.py)
    # experiment logs of the fine-tuning under the run directory: tensorboard, csv, wandb, or none
    logger: Any = field(default_factory=lambda: ["tensorboard", "csv"])
    cache_dir: str = ".cache/text_embeddings"
    trainer: VideoTrainerConfig = field(default_factory=VideoTrainerConfig)
    inflation: InflationConfig = field(default_factory=InflationConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    local: LocalEditConfig = field(default_factory=LocalEditConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
