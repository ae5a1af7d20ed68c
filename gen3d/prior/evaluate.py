"""Judge the builtin prior: a small shape/colour classifier and a sample-accuracy evaluation.

The classifier (two heads: 5 shapes, 8 colours) is trained with Lightning on held-out renders
(a different seed than the prior's data) and shipped in `extern/builtin-classifier/`. It is also
meant for other features (e.g. video editing) to check the colour/shape of generated frames:

    model = load_classifier("extern/builtin-classifier")
    shapes, colours = classify(model, images)  # images [B,3,H,W] in [0,1], any H, W

`evaluate(prior_path, n_per_prompt)` samples every "a {colour} {shape}" prompt with DDIM and
reports how often the classifier finds both the shape and the colour right.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .data import PriorDataConfig, image_tensors, render_dataset
from .sampling import sample_images, save_grid
from .tokenizer import COLOURS, SHAPES

CLASSIFIER_DIR = "extern/builtin-classifier"
GRID_PATH = "docs/images/builtin-prior-samples.png"


# ---------------------------------------------------------------- classifier


@dataclass
class ClassifierConfig:
    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    n_images: int = 8000
    data_seed: int = 1234  # the prior trains on seed 0: these renders are held out
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    num_threads: int = 1
    output_dir: str = CLASSIFIER_DIR


class ShapeColourClassifier(nn.Module):
    """Strided CNN with a shape head (len(SHAPES)) and a colour head (len(COLOURS))."""

    def __init__(self, cfg: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c, 3, stride=2, padding=1),
                nn.GroupNorm(8, c),
                nn.SiLU(),
                nn.Conv2d(c, c, 3, padding=1),
                nn.SiLU(),
            ]
            c_in = c
        self.features = nn.Sequential(*layers)
        self.shape_head = nn.Linear(c_in, len(SHAPES))
        self.colour_head = nn.Linear(c_in, len(COLOURS))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B,3,H,W] in [0,1] -> (shape logits [B,5], colour logits [B,8])."""
        if images.shape[-2:] != (self.cfg.image_size, self.cfg.image_size):
            images = F.interpolate(
                images, size=(self.cfg.image_size,) * 2, mode="bilinear", antialias=True, align_corners=False
            )
        h = self.features(images * 2 - 1).mean(dim=(2, 3))
        return self.shape_head(h), self.colour_head(h)


def load_classifier(path: str | Path = CLASSIFIER_DIR, device="cpu") -> ShapeColourClassifier:
    path = Path(path)
    cfg = ClassifierConfig(**json.loads((path / "config.json").read_text()))
    model = ShapeColourClassifier(cfg)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval().to(device)


@torch.no_grad()
def classify(model: ShapeColourClassifier, images: torch.Tensor) -> tuple[list[str], list[str]]:
    """images [B,3,H,W] in [0,1] -> (shape names, colour names)."""
    p = next(model.parameters())
    s, c = model(images.to(p.device, p.dtype))
    return [SHAPES[i] for i in s.argmax(-1).tolist()], [COLOURS[i] for i in c.argmax(-1).tolist()]


def _augment(x: torch.Tensor) -> torch.Tensor:
    """Mild blur / noise / contrast so generated (slightly soft) samples are judged fairly."""
    b = x.shape[0]
    blur = torch.rand(b) < 0.4
    if blur.any():
        small = F.interpolate(x[blur], scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
        x = x.clone()
        x[blur] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    x = x + 0.03 * torch.rand(b, 1, 1, 1) * torch.randn_like(x)
    return x.clamp(0, 1)


class ClassifierModule(L.LightningModule):
    def __init__(self, model: ShapeColourClassifier, cfg: ClassifierConfig):
        super().__init__()
        self.model, self.cfg = model, cfg

    def training_step(self, batch, batch_idx):
        x, shape, colour = batch
        if self.training:
            x = _augment(x)
        ls, lc = self.model(x)
        loss = F.cross_entropy(ls, shape) + F.cross_entropy(lc, colour)
        acc = ((ls.argmax(-1) == shape) & (lc.argmax(-1) == colour)).float().mean()
        self.log_dict({"loss": loss, "acc": acc}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.cfg.lr, total_steps=self.cfg.steps)
        return [opt], [{"scheduler": sched, "interval": "step"}]


def _label_tensors(data: dict):
    x = image_tensors(data["images"])
    return x, torch.from_numpy(data["shape"]).long(), torch.from_numpy(data["colour"]).long()


def train_classifier(
    cfg: ClassifierConfig = ClassifierConfig(), run_dir: str | Path = ".cache/classifier_run", progress_bar: bool = True
) -> Path:
    """Render held-out labelled images, train the classifier, save config.json + model.safetensors."""
    torch.set_num_threads(cfg.num_threads)
    L.seed_everything(cfg.data_seed)
    data = render_dataset(PriorDataConfig(n_images=cfg.n_images, seed=cfg.data_seed, image_size=cfg.image_size))
    ds = torch.utils.data.TensorDataset(*_label_tensors(data))
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.data_seed),
    )
    model = ShapeColourClassifier(cfg)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=cfg.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
    )
    trainer.fit(ClassifierModule(model, cfg), loader)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out


@torch.no_grad()
def classifier_accuracy(model: ShapeColourClassifier, n_images: int = 1000, seed: int = 999) -> float:
    """Accuracy (shape and colour right) on fresh renders of yet another seed."""
    data = render_dataset(PriorDataConfig(n_images=n_images, seed=seed), use_cache=False)
    x, s, c = _label_tensors(data)
    ls, lc = model(x)
    return float(((ls.argmax(-1) == s) & (lc.argmax(-1) == c)).float().mean())


# ---------------------------------------------------------------- prior evaluation


def eval_prompts() -> list[tuple[str, str, str]]:
    """(prompt, colour, shape) for all 40 'a {colour} {shape}' prompts."""
    return [(f"a {c} {s}", c, s) for s in SHAPES for c in COLOURS]


@torch.no_grad()
def evaluate(
    prior_path: str | Path = "extern/builtin-prior",
    n_per_prompt: int = 10,
    steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int = 0,
    classifier_path: str | Path = CLASSIFIER_DIR,
    grid_path: str | Path | None = GRID_PATH,
    grid_cols: int = 8,
    verbose: bool = True,
) -> dict:
    """Sample n_per_prompt images for each of the 40 prompts, classify them, report accuracy.

    Returns dict(per_prompt={prompt: acc}, shape_acc, colour_acc, overall, min_prompt_acc, seconds).
    Saves a grid (one row per prompt, first grid_cols samples) to grid_path unless None.
    """
    from diffusers import StableDiffusionPipeline

    t0 = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(str(prior_path), safety_checker=None, requires_safety_checker=False)
    clf = load_classifier(classifier_path)
    per_prompt, shape_ok, colour_ok, rows = {}, 0, 0, []
    for k, (prompt, colour, shape) in enumerate(eval_prompts()):
        imgs = sample_images(pipe, [prompt], n_per_prompt, steps, guidance_scale, seed=seed + k)
        shapes, colours = classify(clf, imgs)
        s_ok = [s == shape for s in shapes]
        c_ok = [c == colour for c in colours]
        per_prompt[prompt] = sum(a and b for a, b in zip(s_ok, c_ok)) / n_per_prompt
        shape_ok += sum(s_ok)
        colour_ok += sum(c_ok)
        rows.append(imgs[:grid_cols])
        if verbose:
            print(
                f"{prompt:22s} {per_prompt[prompt]:6.1%}  (shapes: {', '.join(sorted(set(shapes)))}; "
                f"colours: {', '.join(sorted(set(colours)))})",
                flush=True,
            )
    n = n_per_prompt * len(per_prompt)
    result = dict(
        per_prompt=per_prompt,
        shape_acc=shape_ok / n,
        colour_acc=colour_ok / n,
        overall=sum(per_prompt.values()) / len(per_prompt),
        min_prompt_acc=min(per_prompt.values()),
        n_per_prompt=n_per_prompt,
        steps=steps,
        guidance_scale=guidance_scale,
        seconds=time.time() - t0,
    )
    if grid_path is not None:
        save_grid(torch.cat(rows), grid_path, n_cols=min(grid_cols, n_per_prompt))
    if verbose:
        print(
            f"overall {result['overall']:.1%}  shape {result['shape_acc']:.1%}  colour {result['colour_acc']:.1%}  "
            f"worst prompt {result['min_prompt_acc']:.1%}  ({result['seconds']:.0f}s)",
            flush=True,
        )
    return result


if __name__ == "__main__":
    # python -m gen3d.prior.evaluate [train-classifier] [prior_path] [n_per_prompt]
    args = sys.argv[1:]
    if args[:1] == ["train-classifier"]:
        out = train_classifier()
        print(f"classifier saved to {out}; held-out accuracy {classifier_accuracy(load_classifier(out)):.1%}")
    else:
        torch.set_num_threads(2)
        evaluate(args[0] if args else "extern/builtin-prior", int(args[1]) if len(args) > 1 else 10)
