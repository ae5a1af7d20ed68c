"""gen3d.utils.device: one device decision for 3D and video configs."""
from types import SimpleNamespace

import pytest
import torch

from gen3d.errors import UserError
from gen3d.utils.device import prior_dtype, requested_device, resolve_accelerator, run_device


def cfg(device="auto", accelerator="auto"):
    return SimpleNamespace(device=device, trainer=SimpleNamespace(accelerator=accelerator))


def test_device_wins_over_trainer_accelerator():
    assert requested_device(cfg("cpu", "cuda")) == "cpu"
    assert requested_device(cfg("auto", "cpu")) == "cpu"
    assert requested_device("gpu") == "gpu"
    assert run_device(cfg("auto", "gpu")) == "cuda"
    assert run_device(cfg("cpu")) == "cpu"
    assert run_device(cfg()) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_resolve_accelerator_errors():
    assert resolve_accelerator(cfg("cpu")) == "cpu"
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        resolve_accelerator(cfg("tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_accelerator(cfg(accelerator="cuda"))


def test_prior_dtype():
    assert prior_dtype("auto", torch.device("cpu")) == torch.float32
    assert prior_dtype("auto", torch.device("cuda")) == torch.float16
    assert prior_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(UserError, match="model_dtype must be auto"):
        prior_dtype("fp8", torch.device("cpu"))
