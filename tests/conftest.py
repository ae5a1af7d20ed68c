import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# one thread: deterministic, and immune to OpenMP slow-downs when other processes share the cores
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A random-weight diffusers pipeline folder with the builtin prior's architecture."""
    from gen3d.prior.model import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("pipe") / "tiny", seed=0)
