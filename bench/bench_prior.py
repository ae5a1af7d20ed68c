"""Speed of the builtin prior on CPU: one 25-step DDIM sample and one CFG noise prediction (batch 2).

    python bench/bench_prior.py [prior_path]     (default extern/builtin-prior, else a random-weight copy)

Targets (2 CPU cores): sample < 1 s, CFG noise prediction < 50 ms. Prints torch threads 2 and 1.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gen3d.diffusion.prior import encode_text  # noqa: E402
from gen3d.prior.model import build_random_pipeline  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def bench(path: str | Path, threads: int = 2, repeats: int = 5) -> dict:
    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(path))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def sample():
        pipe(
            "a red cube, front view",
            num_inference_steps=25,
            guidance_scale=7.5,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        )

    emb = encode_text(pipe.text_encoder, pipe.tokenizer, ["", "a red cube, front view"])
    h = pipe.unet.config.sample_size
    latents = torch.randn(1, pipe.unet.config.in_channels, h, h)
    t = torch.tensor(500)

    def cfg_noise():
        eps_u, eps_c = pipe.unet(torch.cat([latents] * 2), t, encoder_hidden_states=emb).sample.chunk(2)
        return eps_u + 7.5 * (eps_c - eps_u)

    return {
        "sample_25_steps_s": _median_seconds(sample, repeats),
        "cfg_noise_pred_batch2_s": _median_seconds(cfg_noise, 5 * repeats),
    }


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("extern/builtin-prior")
    with tempfile.TemporaryDirectory() as tmp:
        if not (path / "model_index.json").exists():
            print(f"{path} not found: benchmarking a random-weight prior with the same architecture")
            path = build_random_pipeline(Path(tmp) / "prior")
        for threads in (2, 1):  # on a busy shared machine 1 thread can be much faster than 2
            r = bench(path, threads=threads)
            print(
                f"torch threads {threads}: one 25-step DDIM sample (CFG 7.5): {r['sample_25_steps_s']:.3f} s "
                f"(target < 1 s); one CFG noise prediction, batch 2: {1000 * r['cfg_noise_pred_batch2_s']:.1f} ms "
                f"(target < 50 ms)"
            )
