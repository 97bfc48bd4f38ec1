"""Reading texts token by token: sliding windows over long texts, and every model's logits for each window.

A text is tokenized with the model's tokenizer as it is (its own special tokens) and truncated at
``max_length`` tokens. Position t >= 1 predicts token t from tokens 0..t-1. A text longer than the
model's context is read in windows of that context, each starting ``window - overlap`` tokens after
the previous one; a window after the first predicts only the tokens the windows before it did not,
so each token is predicted once, with at least ``overlap`` tokens of context (transformers'
perplexity guide; ``overlap`` = ``doc_stride``, default half a window).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import MissingOutput, ModelLoadError, UsageError
from ..models.base import Backend, forward_counter

#: Rows of (positions x vocabulary) turned into float64 at once: bounds the memory of one step.
_CELLS = 1 << 21


@dataclass(frozen=True)
class Segment:
    """One window of one text: the model reads tokens ``start:end`` of text ``text`` and predicts positions
    ``first:stop`` (``stop`` is ``end``, or ``end + 1`` where the token after the window is a target too)."""

    text: int
    start: int
    end: int
    first: int
    stop: int = -1

    def __post_init__(self) -> None:
        if self.stop < 0:
            object.__setattr__(self, "stop", self.end)


def context_length(backend: Backend) -> int | None:
    """The most tokens the model reads at once (config.json's positions, or the tokenizer's limit)."""
    config = backend.config()
    bounds = [config.get(k) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
    bounds.append(getattr(backend.tokenizer, "model_max_length", None))
    known = [b for b in bounds if isinstance(b, int) and 1 < b < 1_000_000]  # tokenizers say 1e30 for "no limit"
    return min(known) if known else None


def window_size(backends: Sequence[Backend], max_length: int) -> int:
    """The window both (all) models can read: the smallest context, and never more than ``max_length``."""
    contexts = [c for c in (context_length(b) for b in backends) if c is not None]
    window = min([max_length, *contexts])
    if window < 2:
        raise UsageError(f"A causal LM predicts a token from the ones before it, so it needs windows of at least 2 "
                         f"tokens; max_length is {max_length} (model context: {min(contexts, default='not stated')})")
    return window


def overlap_of(window: int, doc_stride: int | None) -> int:
    """Tokens each window shares with the one before (its context-only head): ``doc_stride``, else half a window.
    A ``doc_stride`` that leaves a window nothing new to predict is a usage error naming both."""
    if doc_stride is not None and doc_stride >= window:
        raise UsageError(f"doc_stride ({doc_stride}) must be below the causal-LM window ({window} tokens: the smaller "
                         f"of max_length and the models' context), or each window would predict nothing new; lower "
                         f"doc_stride (--miniature-doc-stride) or leave it unset (half a window)")
    overlap = doc_stride if doc_stride is not None else window // 2
    return max(1, min(overlap, window - 1))


def windows(length: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, first predicted position) of each window over ``length`` tokens; positions 1..length-1 are
    each predicted by exactly one window.

    >>> windows(10, 4, 2)
    [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    """
    if window < 2 or not 1 <= overlap < window:
        raise ValueError(f"Expected a window of at least 2 tokens and 1 <= overlap < window but got {window}, {overlap}")
    spans, start, first = [], 0, 1
    while True:
        end = min(length, start + window)
        spans.append((start, end, first))
        if end >= length:
            return spans
        start, first = end - overlap, end


def windows_per_batch(backends: Sequence[Backend], window: int, memory_mb: int) -> int:
    """How many windows one batch holds: as many as keep a batch's logits (window x vocabulary float32 per
    window) within ``memory_mb`` per model, at least one. A fixed count would let a large vocabulary take
    gigabytes (32 windows of 256 tokens over 32k tokens: 1 GB per model) and leave a small one underused."""
    widths = [b.config().get("vocab_size") for b in backends]
    vocabulary = max((w for w in widths if isinstance(w, int) and w > 0), default=0)
    vocabulary = vocabulary or max(len(b.tokenizer) for b in backends)
    return max(1, int(memory_mb * 2**20 // (4 * window * vocabulary)))


def tokenize(backend: Backend, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text's token ids as the model's tokenizer makes them, truncated at ``max_length`` tokens."""
    return [list(ids) for ids in backend.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def segments(ids: Sequence[Sequence[int]], window: int, overlap: int) -> list[Segment]:
    """Every text's windows (a text the tokenizer made no tokens of has none)."""
    return [Segment(i, s, e, f) for i, tokens in enumerate(ids) if tokens
            for s, e, f in windows(len(tokens), window, overlap)]


def padded_batches(backend: Backend, ids: Sequence[Sequence[int]], pieces: Sequence[Segment],
                   batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The pieces' tokens in length-sorted batches of ``batch_size`` windows (see :func:`windows_per_batch`), padded
    to their longest member: (the pieces' indices, the batch) each."""
    encoded = {"input_ids": [ids[p.text][p.start:p.end] for p in pieces]}
    encoded["attention_mask"] = [[1] * len(x) for x in encoded["input_ids"]]
    return backend.batches(encoded, ["input_ids", "attention_mask"], batch_size)


def forward(backends: Sequence[Backend], batches: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]], lengths: Sequence[int],
            *, need_hidden: bool, model_names: Sequence[str]) -> Iterator[tuple[int, list[np.ndarray], list[Any]]]:
    """Each piece (by index) of ``batches`` with every model's logits (tokens, vocabulary) and hidden states (or None),
    cut to its ``lengths``. All models read the same batches, one batch in memory at a time: the memory of a run is
    one batch's logits per model, whatever the number of texts."""
    for index, batch in batches:
        results = []
        for backend, name in zip(backends, model_names):
            logits, hidden = backend.checked_forward(batch, need_hidden)
            forward_counter.batches += 1
            if logits is None or np.ndim(logits) != 3:
                raise MissingOutput(
                    f"Model {name!r} gives no next-token logits (architectures: {_architectures(backend)}), which "
                    f"task = \"causal-lm\" needs; give a causal language model (*ForCausalLM, GPT2LMHeadModel), or add "
                    f"?task=causal-lm to its spec if its files do not say so")
            results.append((logits, hidden))
        for row, i in enumerate(index):
            length = lengths[i]
            yield (int(i), [np.asarray(r[0][row, :length]) for r in results],
                   [None if r[1] is None else np.asarray(r[1][row, :length], dtype=np.float32) for r in results])


def stream(backends: Sequence[Backend], ids: Sequence[Sequence[int]], pieces: Sequence[Segment], *, batch_size: int,
           need_hidden: bool, model_names: Sequence[str]) -> Iterator[tuple[Segment, list[np.ndarray], list[Any]]]:
    """Each segment with every model's logits and hidden states for it (:func:`forward` over :func:`padded_batches`)."""
    lengths = [p.end - p.start for p in pieces]
    for i, logits, hidden in forward(backends, padded_batches(backends[0], ids, pieces, batch_size), lengths,
                                     need_hidden=need_hidden, model_names=model_names):
        yield pieces[i], logits, hidden


def _architectures(backend: Backend) -> str:
    return ", ".join(backend.config().get("architectures") or []) or "not stated"


def predicted_rows(piece: Segment, logits: np.ndarray) -> np.ndarray:
    """The logits rows that predict positions ``first:stop`` of the segment (row t predicts token t + 1)."""
    return logits[piece.first - 1 - piece.start : piece.stop - 1 - piece.start]


def chunks(rows: int, vocabulary: int) -> Iterator[slice]:
    """Slices of ``rows`` positions of at most ``_CELLS`` logits each (the float64 working set of one step)."""
    step = max(1, _CELLS // max(1, vocabulary))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def log_probabilities(rows: np.ndarray, model: str, eval_set: EvalSet, text: int) -> Any:
    """The float64 log-softmax of logits ``rows`` (positions x vocabulary) as a torch tensor, refusing non-finite
    logits as :func:`require_finite` does. torch spreads both passes over the cores, where numpy's run on one (the
    log-softmax was a quarter of a causal-LM pair's time); the check runs on the float64 copy the log-softmax needs
    anyway, and finite rows need no padding mask."""
    import torch

    z = torch.from_numpy(np.ascontiguousarray(rows)).double()
    # A row's float64 sum of float32 logits cannot overflow, so it is finite exactly when every logit is: one
    # reduction, where an element-wise isfinite would write a vocabulary-wide mask.
    if not bool(z.sum(-1).isfinite().all()):
        require_finite(rows, model, eval_set, text)
    return torch.log_softmax(z, dim=-1)


def picked(log_p: Any, targets: np.ndarray) -> np.ndarray:
    """Each position's log-probability of its target token."""
    import torch

    return log_p.gather(1, torch.from_numpy(np.asarray(targets, dtype=np.int64))[:, None])[:, 0].numpy()


def require_finite(logits: np.ndarray, model: str, eval_set: EvalSet, text: int) -> None:
    """A model that computes NaN or infinity is broken: an error naming it (a NaN logit would otherwise be read as
    a token of probability 0, and the figures would look plausible)."""
    if not np.isfinite(logits).all():
        raise ModelLoadError(
            f"Model {model!r} computed non-finite logits (NaN or infinity) on text {eval_set.ids[text]!r} of "
            f"{eval_set.name!r}; a broken export or quantization cannot be gated: check the model")
