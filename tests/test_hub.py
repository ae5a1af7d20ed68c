"""Hub ids: first-use download from a fake hub on 127.0.0.1, resumed transfers, one-line errors, the cache."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gen3d.diffusion import hub
from gen3d.diffusion.layout import needed_files
from gen3d.diffusion.random_pipelines import write_hf_cache, write_pipeline
from gen3d.errors import UserError
from tests.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
REPO = "stabilityai/stable-diffusion-2-1-base"


@pytest.fixture(scope="module")
def sd15_all(tmp_path_factory):
    """SD 1.5 as the hub repository holds it: every weight copy, .ckpt files, the safety checker."""
    return write_pipeline("sd15", tmp_path_factory.mktemp("hubsrc") / "sd15", weights="all")


@pytest.fixture
def online(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE off (conftest sets it), a private cache, short timeouts."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEN3D_HUB_TIMEOUT", "3")
    return tmp_path / "cache"


def test_needed_files_skip_duplicates_and_safety_checker(sd15_all):
    files = [p.relative_to(sd15_all).as_posix() for p in sd15_all.rglob("*") if p.is_file()]
    import json

    need = needed_files("x/y", files, json.loads((sd15_all / "model_index.json").read_text()))
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in need and "text_encoder/model.fp16.safetensors" in need
    assert not [
        f
        for f in need
        if f.endswith((".ckpt", ".bin"))
        or "non_ema" in f
        or "safety_checker" in f
        or "feature_extractor" in f
        or "/" not in f
        and f != "model_index.json"
    ]
    assert {"tokenizer/vocab.json", "scheduler/scheduler_config.json", "unet/config.json"} <= set(need)


def test_first_use_download_resumes_an_interrupted_transfer(sd15_all, online, monkeypatch):
    from huggingface_hub import constants

    from gen3d.diffusion.prior import load_prior

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)  # 10 MB by default: larger than these files

    with FakeHub() as fake:
        fake.add_folder("org/sd15", sd15_all)
        size = len(fake.repos["org/sd15"]["unet/diffusion_pytorch_model.fp16.safetensors"])
        fake.truncate_once["unet/diffusion_pytorch_model.fp16.safetensors"] = (size // 3) & ~0xFFFF
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        path = hub.fetch("org/sd15")
        got = [p for m, p, _ in fake.requests if m == "GET" and "/resolve/" in p]
        ranges = [r for m, p, r in fake.requests if r and p.endswith("unet/diffusion_pytorch_model.fp16.safetensors")]
    assert path.is_relative_to(online) and (online / "models--org--sd15" / "refs" / "main").is_file()
    assert ranges == [f"bytes={(size // 3) & ~0xFFFF}-"]  # resumed from the bytes already received
    assert (path / "unet" / "diffusion_pytorch_model.fp16.safetensors").read_bytes() == (
        sd15_all / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    ).read_bytes()
    assert not [p for p in got if p.endswith(".ckpt") or ".bin" in p or "safety_checker" in p]
    assert not (path / "safety_checker").exists() and not (path / "v1-5-pruned.ckpt").exists()
    # the hub is gone now: the cached snapshot is used without any request
    assert hub.fetch("org/sd15") == path
    prior = load_prior("org/sd15")
    assert prior.path == path and prior.encode_text(["a pineapple"]).shape[1] == 77


def test_files_of_an_earlier_run_are_not_fetched_again(sd15_all, online, monkeypatch):
    with FakeHub() as fake:
        fake.add_folder("org/sd15", sd15_all)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        path = hub.fetch("org/sd15")
        weights = path / "unet" / "diffusion_pytorch_model.fp16.safetensors"
        weights.resolve().unlink()  # as if that file never finished: no blob, no link
        weights.unlink()
        fake.requests.clear()
        assert hub.fetch("org/sd15") == path
        got = [p for m, p, _ in fake.requests if m == "GET" and "/resolve/" in p]
    assert got and all(p.endswith("unet/diffusion_pytorch_model.fp16.safetensors") for p in got)


@pytest.mark.parametrize("status, words", [(404, "does not exist on the hub"), (401, "gated")])
def test_missing_or_gated_repo_is_one_line_and_writes_nothing(status, words, online, monkeypatch):
    with FakeHub() as fake:
        fake.add_status("org/nope", status)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        with pytest.raises(UserError) as err:
            hub.fetch("org/nope")
    assert words in str(err.value) and "\n" not in str(err.value) and "--model builtin" in str(err.value)
    assert not online.exists()


@pytest.mark.parametrize("how", ["offline", "closed-port", "default-endpoint"])
def test_unreachable_hub_says_what_to_do_within_seconds(how, online, monkeypatch):
    if how == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif how == "closed-port":
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    else:  # the real hub: unreachable on this machine (if it is reachable, the repo does not exist)
        monkeypatch.delenv("HF_ENDPOINT", raising=False)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        hub.fetch("gen3d-tests/no-such-model")
    msg = str(err.value)
    assert time.monotonic() - start < 30
    assert "\n" not in msg and "--model builtin" in msg
    if how != "default-endpoint":
        assert (
            "not in the Hugging Face cache" in msg and "python -m gen3d.diffusion.hub gen3d-tests/no-such-model" in msg
        )
    assert not online.exists()


def test_hf_cache_layout_addressed_by_hub_id(tmp_path, monkeypatch):
    from gen3d.diffusion.prior import load_prior

    src = write_pipeline("sd21-base", tmp_path / "src", weights="fp16")
    snap = write_hf_cache(src, tmp_path / "cache", REPO)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    prior = load_prior(REPO)  # HF_HUB_OFFLINE=1 (conftest): no network
    assert prior.path == snap and prior.tokenizer.pad_token == "!"


def test_launch_with_a_missing_repo_exits_2_and_writes_nothing(tmp_path):
    with FakeHub() as fake:
        fake.add_status("org/nope", 404)
        env = {
            **__import__("os").environ,
            "HF_ENDPOINT": fake.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_CACHE": str(tmp_path / "cache"),
        }
        proc = subprocess.run(
            [
                sys.executable,
                "launch.py",
                "--config",
                "dreamfusion.yaml",
                "--prompt",
                "a pineapple",
                "--model",
                "org/nope",
                "--output",
                str(tmp_path / "o"),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model 'org/nope'") and "does not exist" in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()
