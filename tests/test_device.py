"""gen3d.utils.device: one device decision for 3D and video configs."""

from types import SimpleNamespace

import pytest
import torch

from gen3d.errors import UserError
from gen3d.utils.device import prior_dtype, requested_device, resolve_accelerator, run_device


def cfg(device="auto"):
    return SimpleNamespace(device=device)


def test_device_of_a_config_or_a_name():
    assert requested_device(cfg("cpu")) == "cpu"
    assert requested_device("gpu") == "gpu"
    assert run_device(cfg("gpu")) == "cuda"
    assert run_device(cfg("cpu")) == "cpu"
    assert run_device(cfg()) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_accelerator_errors():
    assert resolve_accelerator(cfg("cpu")) == "cpu"
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        resolve_accelerator(cfg("tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_accelerator("cuda")


def test_video_config_moved_accelerator_key():
    from gen3d.config import build_config
    from video.config import VideoEditConfig

    assert build_config(VideoEditConfig, {"device": "cpu"}).device == "cpu"
    with pytest.raises(UserError, match="'trainer.accelerator' is now 'device'"):
        build_config(VideoEditConfig, {"trainer": {"accelerator": "cpu"}})


def test_prior_dtype():
    assert prior_dtype("auto", torch.device("cpu")) == torch.float32
    assert prior_dtype("auto", torch.device("cuda")) == torch.float16
    assert prior_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserError, match="model_dtype must be auto"):
        prior_dtype("fp8", torch.device("cpu"))
