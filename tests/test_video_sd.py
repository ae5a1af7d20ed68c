"""Video runs as Stable Diffusion users make them: --controlnet (repeatable, kind=PATH, checked against the
prior), model_dtype and the per-device default size, the metrics policy (CLIP when one is local, the builtin
classifier only for the builtin prior) and long-prompt warnings. Tiny random-weight models throughout."""

import json
import logging
import shutil

import pytest
import torch

import launch
from gen3d.config import build_config
from gen3d.errors import UserError
from gen3d.utils.media import write_video
from tests.test_video_metrics import tiny_clip  # noqa: F401 - the tiny random-weight CLIP folder fixture
from video.config import VideoEditConfig
from video.controlnets import assign_controlnets, controlnet_entries
from video.demo import moving_shape
from video.metrics import Judge
from video.run import working_size

TINY = [
    "size=0",  # the per-device default (configs may name the paper's 512)
    "trainer.precision=auto",
    "trainer.gradient_checkpointing=false",
    "trainer.max_steps=1",
    "trainer.checkpoint_every=1",
    "sampling.steps=2",
    "sampling.inversion_steps=2",
    "--frames",
    "2",
]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("in") / "v.gif", moving_shape(3, 64).permute(0, 2, 3, 1), fps=5)


def launch_video(config, model, video, out, *extra, prompt="a blue sphere"):
    args = ["--config", config, "--model", str(model), "--video", str(video), "--prompt", prompt]
    args += ["--edit", "a red sphere", "--output", str(out), "--device", "cpu", f"cache_dir={out / 'cache'}"]
    return launch.main(args + TINY + list(extra))


def one_line_error(code, capsys, out, *words):
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "\n" not in err, err
    assert all(w in err for w in words), err
    assert not out.exists() or not any(out.rglob("config.yaml"))  # nothing written
    return err


# ----- --controlnet ------------------------------------------------------------------------------------


def test_controlnet_entries_pair_with_controls():
    two = ["canny", "depth"]
    assert assign_controlnets(["/a", "/b"], two, False) == {"canny": "/a", "depth": "/b"}  # in --control order
    assert assign_controlnets(["depth=/b", "/a"], two, False) == {"canny": "/a", "depth": "/b"}
    assert assign_controlnets("canny=/a,depth=/b", two, False) == {"canny": "/a", "depth": "/b"}
    assert assign_controlnets(["canny=/a,depth=/b"], two, False) == {"canny": "/a", "depth": "/b"}
    assert controlnet_entries("/data/x,y") == ["/data/x,y"]  # a comma inside a plain path is kept
    assert assign_controlnets(None, ["canny"], True)["canny"].endswith("builtin-controlnet-canny")
    for spec, kinds, msg in [
        (["/a", "/b"], ["canny"], "2 ControlNets for 1 controls"),
        (["depth=/b"], ["canny"], "no --control depth"),
        (["canny=/a", "canny=/b"], ["canny"], "twice"),
        (["/a"], [], "no --control"),
        (None, ["depth"], "needs a ControlNet: pass --controlnet"),
    ]:
        with pytest.raises(UserError, match=msg):
            assign_controlnets(spec, kinds, True)


def test_controlnet_flag_runs_controlvideo(tiny_pipeline, controlnet, video, tmp_path):
    out = tmp_path / "o"
    assert launch_video("controlvideo.yaml", tiny_pipeline, video, out, "--controlnet", f"canny={controlnet}") == 0
    run = next((out / "controlvideo").iterdir())
    assert (run / "control-canny.mp4").is_file() and (run / "edit-0.mp4").is_file()
    assert str(controlnet) in (run / "config.yaml").read_text()


def _fake_controlnet(folder, unet_config, **change):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**unet_config, "_class_name": "ControlNetModel", **change}))
    return folder


@pytest.mark.parametrize(
    "case,words",
    [
        ("unet", ["is not a ControlNet", "UNet2DConditionModel"]),
        ("no-config", ["no readable config.json"]),
        ("cross_attention_dim", ["does not fit the prior", "cross_attention_dim"]),
        ("in_channels", ["does not fit the prior", "in_channels"]),
        ("no-weights", ["no safetensors or .bin weights"]),
        ("missing", ["not found"]),
    ],
)
def test_controlnet_that_is_not_one_is_one_line(case, words, tiny_pipeline, video, tmp_path, capsys):
    unet_config = json.loads((tiny_pipeline / "unet" / "config.json").read_text())
    bad = tmp_path / "bad"
    if case == "unet":  # the prior's own UNet folder passed as a ControlNet
        shutil.copytree(tiny_pipeline / "unet", bad)
    elif case == "no-config":
        bad.mkdir()
    elif case == "no-weights":
        _fake_controlnet(bad, unet_config)
    elif case != "missing":
        _fake_controlnet(bad, unet_config, **{case: unet_config[case] + 4})
    out = tmp_path / "o"
    code = launch_video("controlvideo.yaml", tiny_pipeline, video, out, "--controlnet", str(bad))
    one_line_error(code, capsys, out, *words)


def test_controlnet_flag_needs_a_video_config(tmp_path, capsys):
    code = launch.main(["--config", "dreamfusion.yaml", "--prompt", "a red cube", "--controlnet", str(tmp_path)])
    one_line_error(code, capsys, tmp_path / "outputs", "--controlnet does not apply")


# ----- model_dtype and the default size ------------------------------------------------------------------


def test_default_size_per_device():
    auto, fixed = build_config(VideoEditConfig, {}), build_config(VideoEditConfig, {"size": 128})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert working_size(auto, 512, cuda) == 512 and working_size(auto, 512, cpu) == 256
    assert working_size(auto, 64, cpu) == 64 and working_size(fixed, 512, cuda) == 128


@pytest.mark.parametrize(
    "extra,words",
    [
        (["model_dtype=float16"], ["model_dtype=float16 on the CPU", "bfloat16"]),
        (["model_dtype=bfloat16", "trainer.precision=32-true"], ["trainer.precision=bf16-mixed"]),
        (["model_dtype=half"], ["model_dtype must be auto"]),
    ],
)
def test_bad_model_dtype_is_one_line(extra, words, tiny_pipeline, video, tmp_path, capsys):
    out = tmp_path / "o"
    one_line_error(launch_video("tuneavideo.yaml", tiny_pipeline, video, out, *extra), capsys, out, *words)


def test_bfloat16_prior_on_cpu(tiny_pipeline, video, tmp_path):
    """A bfloat16 prior: fine-tuned weights and their checkpoint stay float32, the resolved config says so."""
    out = tmp_path / "o"
    assert launch_video("tuneavideo.yaml", tiny_pipeline, video, out, "model_dtype=bfloat16") == 0
    run = next((out / "tuneavideo").iterdir())
    cfg = (run / "config.yaml").read_text()
    assert "model_dtype: bfloat16" in cfg and "precision: bf16-mixed" in cfg and "size: 64" in cfg
    state = torch.load(run / "ckpts" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(v.dtype == torch.float32 for v in state.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("first_loss", "last_loss"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_float16_prior_by_default_on_cuda(tiny_pipeline, video, tmp_path):
    out = tmp_path / "o"
    assert launch_video("tuneavideo.yaml", tiny_pipeline, video, out, "--device", "cuda") == 0  # the last wins
    cfg = (next((out / "tuneavideo").iterdir()) / "config.yaml").read_text()
    assert "model_dtype: float16" in cfg and "precision: 16-mixed" in cfg


# ----- metrics policy ------------------------------------------------------------------------------


def test_sd_prior_gets_no_classifier_accuracy_and_says_so(tiny_pipeline, video, tmp_path, monkeypatch, capsys):
    """Any prior but the builtin: no colour / shape accuracy; no local CLIP: said in metrics.json and printed."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "o"
    assert launch_video("tuneavideo.yaml", tiny_pipeline, video, out) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((next((out / "tuneavideo").iterdir()) / "metrics.json").read_text())
    judges = metrics["judges"]
    assert judges["clip"] is None and judges["classifier"] is None
    assert any("no CLIP model available locally" in n for n in judges["notes"])
    assert any("builtin prior only" in n for n in judges["notes"])
    assert "classifier" not in metrics["edits"][0] and "colour-accuracy" not in printed
    assert "text alignment is not measured" in printed


def test_cached_clip_is_found_offline(tiny_clip, tmp_path, monkeypatch):  # noqa: F811
    """A Hugging Face cache holding openai/clip-vit-large-patch14 (here: the tiny CLIP) is used with
    HF_HUB_OFFLINE=1 and no metrics.clip_model."""
    from gen3d.diffusion.random_pipelines import write_hf_cache

    write_hf_cache(tiny_clip, tmp_path / "hub", "openai/clip-vit-large-patch14")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    judge = Judge(None, None, prior=None)
    assert judge.clip is not None and judge.judges()["clip"] == "openai/clip-vit-large-patch14"
    report = judge.report(torch.rand(2, 3, 32, 32), "a red sphere")
    assert -1 <= report["text_alignment_clip"] <= 1 and report["frame_consistency"]["embedding"] == "clip"


def test_clip_model_key_and_long_prompt_warning(tiny_clip, tiny_pipeline, video, tmp_path, caplog):  # noqa: F811
    """metrics.clip_model=PATH gives CLIP text alignment; a prompt past the text encoders' limit warns (the
    builtin-shaped tokenizer reads 14 tokens) instead of being cut silently."""
    out = tmp_path / "o"
    long = " ".join(["a blue sphere"] * 8)
    with caplog.at_level(logging.WARNING, logger="gen3d"):
        code = launch_video(
            "tuneavideo.yaml", tiny_pipeline, video, out, f"metrics.clip_model={tiny_clip}", prompt=long
        )
    assert code == 0
    metrics = json.loads((next((out / "tuneavideo").iterdir()) / "metrics.json").read_text())
    assert metrics["judges"]["clip"] == str(tiny_clip)
    assert -1 <= metrics["edits"][0]["text_alignment_clip"] <= 1
    assert "the text encoder reads" in caplog.text and "it sees only" in caplog.text


def test_clip_model_that_is_not_clip_is_one_line(tiny_pipeline, video, tmp_path, capsys):
    out = tmp_path / "o"
    code = launch_video("tuneavideo.yaml", tiny_pipeline, video, out, f"metrics.clip_model={tiny_pipeline / 'unet'}")
    one_line_error(code, capsys, out, "metrics.clip_model", "config.json")


def test_controlnet_hub_id_is_fetched_on_first_use(tiny_pipeline, controlnet, tmp_path, monkeypatch):
    """--controlnet org/name: downloaded from a fake hub on 127.0.0.1 into the Hugging Face cache, then
    checked like a folder; offline, a ControlNet that is not cached is one line naming the fetch command."""
    from huggingface_hub import constants

    from tests.fake_hub import FakeHub
    from video.controlnets import resolve_controlnets

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEN3D_HUB_TIMEOUT", "3")
    with FakeHub() as fake:
        fake.add_folder("org/tiny-controlnet-canny", controlnet)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        paths = resolve_controlnets(["org/tiny-controlnet-canny"], ["canny"], tiny_pipeline, "tiny", False)
    assert paths["canny"].is_relative_to(tmp_path / "cache") and (paths["canny"] / "config.json").is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="python -m gen3d.diffusion.hub org/other-controlnet"):
        resolve_controlnets(["org/other-controlnet"], ["canny"], tiny_pipeline, "tiny", False)
