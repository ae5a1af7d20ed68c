"""Random-weight Stable Diffusion pipelines in the exact layouts users have (for tests and benches).

`write_pipeline(kind, out)` writes a folder shaped like the hub repositories of Stable Diffusion 1.5
(`stable-diffusion-v1-5/stable-diffusion-v1-5`), 2.1-base and 2.1 (768 px, v-prediction): their real
model_index.json (SD 1.5 lists safety_checker and feature_extractor), scheduler configs (PNDM / DDIM,
epsilon / v_prediction), tokenizer configs (SD 2's pad token "!"), text encoders of CLIP ViT-L (SD 1,
768-d, quick_gelu, 12 layers) or OpenCLIP ViT-H (SD 2, 1024-d, gelu, 23 layers) shape, and the weight
files as the hub stores them: `weights` picks plain safetensors, fp16-variant files only (what
`hf download --include "*fp16*"` leaves), .bin only, or `all` (every copy, plus root-level .ckpt files
and the safety checker) as the hub repository holds them. `width="reduced"` keeps every config key but
shrinks channels, layers and resolution (latents 8x8) so a CPU test runs in seconds; `"full"` is the
real size. The tokenizer's vocabulary is small (no download): single characters plus a few words.
`write_hf_cache` lays a folder out as the Hugging Face cache does (`models--org--name/snapshots/<hash>/`
with `refs/main`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

SD1_TEXT = dict(
    hidden_act="quick_gelu",
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    projection_dim=768,
)
SD2_TEXT = dict(
    hidden_act="gelu",
    hidden_size=1024,
    intermediate_size=4096,
    num_attention_heads=16,
    num_hidden_layers=23,
    projection_dim=512,
)
TEXT_COMMON = dict(
    architectures=["CLIPTextModel"],
    attention_dropout=0.0,
    bos_token_id=0,
    dropout=0.0,
    eos_token_id=2,
    initializer_factor=1.0,
    initializer_range=0.02,
    layer_norm_eps=1e-5,
    max_position_embeddings=77,
    model_type="clip_text_model",
    pad_token_id=1,
    vocab_size=49408,
)
UNET_COMMON = dict(
    act_fn="silu",
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-5,
    norm_num_groups=32,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
VAE = dict(
    act_fn="silu",
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    in_channels=3,
    latent_channels=4,
    layers_per_block=2,
    norm_num_groups=32,
    out_channels=3,
    sample_size=512,
    up_block_types=["UpDecoderBlock2D"] * 4,
    scaling_factor=0.18215,
)
SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
)
INDEX = {
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD2_INDEX = {  # stabilityai/stable-diffusion-2-1(-base): no safety checker
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.10.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
}

LAYOUTS = {
    "sd15": dict(
        index={
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.6.0",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            **INDEX,
        },
        unet=dict(attention_head_dim=8, cross_attention_dim=768),
        text=SD1_TEXT,
        pad="<|endoftext|>",
        scheduler=dict(_class_name="PNDMScheduler"),
        root_ckpts=["v1-5-pruned.ckpt", "v1-5-pruned-emaonly.ckpt", "v1-5-pruned.safetensors"],
    ),
    "sd21-base": dict(
        index={**SD2_INDEX, **INDEX},
        unet=dict(
            attention_head_dim=[5, 10, 20, 20],
            cross_attention_dim=1024,
            use_linear_projection=True,
            dual_cross_attention=False,
            only_cross_attention=False,
            upcast_attention=False,
        ),
        text=SD2_TEXT,
        pad="!",
        scheduler=dict(_class_name="PNDMScheduler", prediction_type="epsilon"),
        root_ckpts=["v2-1_512-ema-pruned.ckpt", "v2-1_512-nonema-pruned.safetensors"],
    ),
    "sd21": dict(
        index={**SD2_INDEX, **INDEX, "scheduler": ["diffusers", "DDIMScheduler"]},
        unet=dict(
            attention_head_dim=[5, 10, 20, 20],
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,
            sample_size=96,
        ),
        text=SD2_TEXT,
        pad="!",
        scheduler=dict(_class_name="DDIMScheduler", prediction_type="v_prediction"),
        root_ckpts=["v2-1_768-ema-pruned.ckpt"],
    ),
}
WORDS = (
    "a",
    "photo",
    "of",
    "pineapple",
    "red",
    "cube",
    "front",
    "side",
    "back",
    "overhead",
    "view",
    "dslr",
    "sphere",
    "blue",
    "moving",
    "is",
)


def configs(kind: str, width: str = "reduced") -> dict:
    """unet / vae / text_encoder configs of a layout ('reduced': same keys, small sizes)."""
    lay = LAYOUTS[kind]
    unet = {"_class_name": "UNet2DConditionModel", **UNET_COMMON, **lay["unet"]}
    text = {**TEXT_COMMON, **lay["text"]}
    vae = {"_class_name": "AutoencoderKL", **VAE, "sample_size": 768 if unet["sample_size"] == 96 else 512}
    if width == "reduced":
        heads = unet["attention_head_dim"]
        unet.update(
            block_out_channels=[40, 80, 80, 80] if isinstance(heads, list) else [32, 64, 64, 64],
            norm_num_groups=8,
            sample_size=unet["sample_size"] // 8,
            cross_attention_dim=text["hidden_size"] // 16,
        )
        text.update(
            hidden_size=text["hidden_size"] // 16,
            intermediate_size=text["intermediate_size"] // 16,
            num_hidden_layers=text["num_hidden_layers"] // 6,
        )
        vae.update(block_out_channels=[8, 16, 32, 32], norm_num_groups=4, sample_size=vae["sample_size"] // 8)
    return dict(unet=unet, vae=vae, text_encoder=text)


def _write_tokenizer(out: Path, pad: str) -> None:
    from gen3d.prior.tokenizer import BOS, EOS, build_merges, build_vocab

    merges = build_merges(list(WORDS))
    vocab = build_vocab(list(WORDS), merges)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": pad, "unk_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "add_prefix_space": False,
                "do_lower_case": True,
                "errors": "replace",
                "model_max_length": 77,
                "tokenizer_class": "CLIPTokenizer",
                **special,
            }
        )
    )


def _save(model, folder: Path, weights: str) -> None:
    """save_pretrained in the requested file layout(s)."""
    if weights in ("safetensors", "all"):
        model.save_pretrained(folder, safe_serialization=True)
    if weights in ("bin", "all"):
        model.save_pretrained(folder, safe_serialization=False)
    if weights in ("fp16", "all"):
        model.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
        if weights == "all":
            model.save_pretrained(folder, safe_serialization=False, variant="fp16")
        model.to(torch.float32)


def write_pipeline(
    kind: str, out: str | Path, width: str = "reduced", weights: str = "safetensors", seed: int = 0
) -> Path:
    """Write a random-weight pipeline folder of layout `kind` (see module doc); returns `out`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    lay, cfg, out = LAYOUTS[kind], configs(kind, width), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    (out / "model_index.json").write_text(json.dumps(lay["index"], indent=2))
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps({**SCHEDULER, **lay["scheduler"]}))
    _write_tokenizer(out / "tokenizer", lay["pad"])
    _save(UNet2DConditionModel.from_config(cfg["unet"]), out / "unet", weights)
    _save(AutoencoderKL.from_config(cfg["vae"]), out / "vae", weights)
    _save(CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])), out / "text_encoder", weights)
    if weights == "all":  # what the hub repository holds besides: never needed by a prior
        for name in lay["root_ckpts"]:
            (out / name).write_bytes(b"not a real checkpoint" * 64)
        for name in ("diffusion_pytorch_model.non_ema.bin", "diffusion_pytorch_model.non_ema.safetensors"):
            (out / "unet" / name).write_bytes(b"ema copy")
        if lay["index"]["safety_checker"][0] is not None:
            (out / "safety_checker").mkdir(exist_ok=True)
            (out / "safety_checker" / "config.json").write_text("{}")
            (out / "safety_checker" / "model.safetensors").write_bytes(b"safety checker")
            (out / "feature_extractor").mkdir(exist_ok=True)
            (out / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    return out


def write_hf_cache(folder: str | Path, cache: str | Path, repo_id: str) -> Path:
    """Copy a pipeline folder into a Hugging Face cache layout; returns the snapshot folder.

    cache/models--org--name/{blobs/<sha256>, snapshots/<commit>/<path> -> ../../blobs/<sha256>, refs/main}
    """
    folder, storage = Path(folder), Path(cache) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for src in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        blob = storage / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snap / src.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        rel = Path(*[".."] * (len(link.relative_to(storage).parts) - 1)) / "blobs" / digest
        link.symlink_to(rel)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    return snap
