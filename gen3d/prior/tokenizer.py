"""An offline CLIP tokenizer whose vocabulary is exactly the builtin prior's caption words.

The builtin prior is trained on captions like "a DSLR photo of a red cube, side view". We build a
`transformers.CLIPTokenizer` from scratch (vocab.json + merges.txt written by us, nothing
downloaded) so that every caption word is ONE token. CLIP's pre-tokenizer lowercases the text and
splits digits from letters, so "3D" becomes the two pieces "3" and "d": both are single tokens.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

from transformers import CLIPTokenizer

SHAPES = ("cube", "sphere", "cylinder", "cone", "torus")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
PREFIXES = ("a photo of", "a DSLR photo of", "a 3D render of")
VIEW_WORDS = ("front", "side", "back", "overhead", "view")

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MODEL_MAX_LENGTH = 16
EOW = "</w>"

# CLIP's pre-tokenizer (minus the special tokens): runs of letters, single digits, other symbols
_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+", re.UNICODE)


def caption_words() -> list[str]:
    """The words a user may type (lowercased, sorted), e.g. 'a', 'black', ..., '3d'."""
    words = {"a", ","}
    for text in PREFIXES + SHAPES + COLOURS + VIEW_WORDS:
        words.update(text.lower().split())
    return sorted(words)


def pretokenize(text: str) -> list[str]:
    """Split text the way CLIP's pre-tokenizer does (lowercase; '3d' -> ['3', 'd'])."""
    return _PRETOKENIZE.findall(text.lower())


def vocabulary() -> list[str]:
    """The pieces that must each be exactly one token: every pre-tokenized caption word."""
    pieces = []
    for w in caption_words():
        for p in pretokenize(w):
            if p not in pieces:
                pieces.append(p)
    return sorted(pieces)


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Plain BPE of one pre-tokenized piece (as CLIP does it: last symbol carries '</w>')."""
    parts = list(word[:-1]) + [word[-1] + EOW]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), None), i) for i, (a, b) in enumerate(zip(parts[:-1], parts[1:]))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2 :]
    return parts


def build_merges(pieces: list[str]) -> list[tuple[str, str]]:
    """Merges so that BPE turns every piece into a single symbol (iterated to a fixed point)."""
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    changed = True
    while changed:
        changed = False
        for w in pieces:
            parts = _bpe(w, ranks)
            if len(parts) > 1:  # join the first two symbols, lowest priority
                pair = (parts[0], parts[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                changed = True
    return merges


def build_vocab(pieces: list[str], merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id: special tokens, printable ASCII characters (with and without '</w>'), merges."""
    tokens = [BOS, EOS]
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        tokens += [c, c + EOW]
    for a, b in merges:
        tokens.append(a + b)
    seen: set[str] = set()
    vocab: dict[str, int] = {}
    for t in tokens:
        if t not in seen:
            seen.add(t)
            vocab[t] = len(vocab)
    return vocab


def build_tokenizer(model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """A CLIPTokenizer covering the caption vocabulary, every word one token."""
    pieces = vocabulary()
    merges = build_merges(pieces)
    vocab = build_vocab(pieces, merges)
    tok = CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=model_max_length)
    for p in pieces:
        ids = tok(p, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise RuntimeError(f"tokenizer construction failed: {p!r} -> {ids}")
    return tok


def save_tokenizer(out_dir: str | Path, model_max_length: int = MODEL_MAX_LENGTH) -> CLIPTokenizer:
    """Write tokenizer.json + tokenizer_config.json and the classic vocab.json + merges.txt."""
    tok = build_tokenizer(model_max_length)
    out_dir = Path(out_dir)
    tok.save_pretrained(str(out_dir))
    merges = build_merges(vocabulary())
    (out_dir / "vocab.json").write_text(json.dumps(build_vocab(vocabulary(), merges), indent=1))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return tok


def _known_words(tokenizer_or_vocab) -> set[str]:
    if tokenizer_or_vocab is None:
        return set(caption_words())
    if isinstance(tokenizer_or_vocab, (list, tuple, set, frozenset)):
        return {w.lower() for w in tokenizer_or_vocab}
    vocab = tokenizer_or_vocab if isinstance(tokenizer_or_vocab, dict) else tokenizer_or_vocab.get_vocab()
    return {t[: -len(EOW)] for t in vocab if t.endswith(EOW) and len(t) > len(EOW) + 1}


def check_prompt(tokenizer_or_vocab, prompt: str) -> None:
    """Raise ValueError naming the first word of `prompt` the builtin prior does not know.

    `tokenizer_or_vocab`: the prior's tokenizer, its vocab dict, a list of words, or None for the
    default caption vocabulary. Words are split on spaces with ',' on its own; case is ignored.
    """
    known = set(caption_words()) | {w for w in _known_words(tokenizer_or_vocab) if len(w) > 1}
    for word in re.findall(r"[^\s,]+|,", prompt.lower()):
        if word not in known:
            names = ", ".join(w for w in caption_words() if w != ",")
            raise ValueError(f"unknown word {word!r}; the builtin prior knows: {names}")
