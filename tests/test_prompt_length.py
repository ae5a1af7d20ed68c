"""Prompts past the text encoder's 77 tokens: the view suffix survives, and every truncation is a warning."""

import logging

import pytest
import torch

from gen3d.diffusion.prior import load_prior
from gen3d.diffusion.prompts import PromptConfig, PromptEmbeddings, cached_text_embeddings
from gen3d.diffusion.random_pipelines import write_pipeline
from gen3d.diffusion.token_budget import n_tokens

LONG = " ".join(["a photo of a pineapple"] * 18)  # 90 tokens


@pytest.fixture(scope="module")
def sd2(tmp_path_factory):
    return load_prior(str(write_pipeline("sd21-base", tmp_path_factory.mktemp("sd2") / "p")))


def test_long_prompt_keeps_the_view_suffix_and_warns(sd2, caplog):
    assert n_tokens(sd2.tokenizer, LONG) == 90
    with caplog.at_level(logging.WARNING, logger="gen3d"):
        emb = PromptEmbeddings(sd2, LONG, PromptConfig(cache_dir=None))
    assert "is 90 tokens" in caplog.text and "view suffix" in caplog.text
    assert all(
        p.endswith(f", {v} view") and n_tokens(sd2.tokenizer, p) <= 75
        for p, v in zip(emb.prompts, ("front", "side", "back", "overhead"))
    )
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(emb.cond[i], emb.cond[j])  # four different view embeddings


def test_short_prompt_unchanged_without_warning(sd2, caplog):
    with caplog.at_level(logging.WARNING, logger="gen3d"):
        emb = PromptEmbeddings(sd2, "a photo of a pineapple", PromptConfig(cache_dir=None))
    assert emb.prompts[0] == "a photo of a pineapple, front view" and not caplog.text


def test_video_prompts_warn_when_cut(sd2, caplog):
    with caplog.at_level(logging.WARNING, logger="gen3d"):
        cached_text_embeddings(sd2, ["a red cube", LONG], None)
    assert caplog.text.count("the text encoder reads 75") == 1


def test_builtin_vocabulary_error_names_both_ways_forward():
    from gen3d.diffusion.prior import BUILTIN_PRIOR
    from gen3d.diffusion.prompts import check_vocabulary
    from gen3d.errors import UserError

    with pytest.raises(UserError) as err:
        check_vocabulary(BUILTIN_PRIOR, "a pineapple")
    msg = str(err.value)
    assert "'pineapple'" in msg and "--model stabilityai/stable-diffusion-2-1-base" in msg and "these words" in msg
