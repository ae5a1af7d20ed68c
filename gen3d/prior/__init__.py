"""The builtin prior: a tiny text-to-image latent diffusion model trained on rendered shapes.

- `tokenizer`: offline CLIP tokenizer over the caption words; `check_prompt` for clear errors.
- `data`: the shapes renderer and captions (seeded).
- `model`: architecture; `build_random_pipeline(out_dir)` writes a random-weight copy.
- `train`: the training stages (VAE, then UNet + text encoder) -> extern/builtin-prior, built from
  `losses`, `modules` (LightningModules), `latents` (cached VAE latents), `fitting` (trainer,
  checkpoints, loader) and `sampling` (DDIM samples, image grids).
- `evaluate`: shape/colour classifier (`load_classifier`, `classify`) and `evaluate`.
- `controlnet`: the builtin canny ControlNet's training; `controlnet_eval`: its evaluation.
Submodules are imported lazily so `import gen3d.prior` stays cheap.
"""

DEFAULT_PATH = "extern/builtin-prior"
