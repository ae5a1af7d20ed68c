import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one thread: deterministic, and immune to OpenMP slow-downs when other processes share the cores
# (OMP_NUM_THREADS also keeps runs started by the tests at one thread: gen3d.utils.threads reads it)
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A random-weight diffusers pipeline folder with the builtin prior's architecture."""
    from gen3d.prior.model import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("pipe") / "tiny", seed=0)


@pytest.fixture(scope="session")
def controlnet(tiny_pipeline, tmp_path_factory):
    """A random-weight ControlNet for the tiny prior (zero convolutions made non-zero)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_pipeline, subfolder="unet")
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))
    torch.manual_seed(0)
    for m in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
        torch.nn.init.normal_(m.weight, std=0.02)
    path = tmp_path_factory.mktemp("cn") / "controlnet"
    net.save_pretrained(path)
    return path
