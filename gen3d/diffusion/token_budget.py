"""Prompts against the text encoder's token limit (77 for CLIP: 75 words' tokens plus start and end).

The tokenizer cuts everything past the limit without a word. Two consequences are handled here:

- view-dependent prompts: the view suffix (", front view") would be the part cut off, making every view's
  embedding identical; `fit_view_prompts` shortens the prompt (whole words from its end) so that prompt
  and suffix fit, and warns;
- any other prompt (negative prompts, video captions and edits): `warn_if_truncated` warns, naming what
  the text encoder will not see.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gen3d")


def capacity(tokenizer) -> int:
    """Tokens of text the encoder reads (model_max_length minus the start and end tokens)."""
    return int(tokenizer.model_max_length) - 2


def n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)


def _fit_words(tokenizer, text: str, budget: int) -> str:
    """The longest prefix of whole words of `text` within `budget` tokens."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:  # binary search on the number of words kept
        mid = (lo + hi + 1) // 2
        if n_tokens(tokenizer, " ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(",;")


def fit_view_prompts(tokenizer, prompt: str, views, view_prompt) -> list[str]:
    """One prompt per view, each within the limit with its view suffix intact (see module doc)."""
    if tokenizer is None:
        return [view_prompt(prompt, v) for v in views]
    room = capacity(tokenizer)
    suffix = max(n_tokens(tokenizer, view_prompt("", v)) for v in views)
    if n_tokens(tokenizer, prompt) + suffix <= room:
        return [view_prompt(prompt, v) for v in views]
    short = _fit_words(tokenizer, prompt, room - suffix)
    log.warning(
        "the prompt is %d tokens, the text encoder reads %d: shortened to '%s' so that the view suffix "
        "(', front view', ...) survives; write a shorter prompt to choose what is kept",
        n_tokens(tokenizer, prompt),
        room,
        short,
    )
    return [view_prompt(short, v) for v in views]


def warn_if_truncated(tokenizer, text: str) -> None:
    if tokenizer is None or not text:
        return
    room = capacity(tokenizer)
    total = n_tokens(tokenizer, text)
    if total > room:
        kept = _fit_words(tokenizer, text, room)
        log.warning(
            "the prompt '%s' is %d tokens, the text encoder reads %d: it sees only '%s'", text, total, room, kept
        )
