"""Causal language models: every position of a text predicts its next token, long texts in sliding windows.

A text is tokenized with the model's tokenizer as it is (its own special tokens) and truncated at
``max_length`` tokens. Position t >= 1 predicts token t from tokens 0..t-1. A text longer than the
model's context is read in windows of that context, each starting ``window - overlap`` tokens after
the previous one; a window after the first predicts only the tokens the windows before it did not,
so each token is predicted once, with at least ``overlap`` tokens of context (transformers'
perplexity guide; ``overlap`` = ``doc_stride``, default half a window).

What one model keeps per text (small: no distribution over the vocabulary is kept): the
log-probability of each actual next token, its own top token at each position, and the mean and
last-token embeddings of the first window. On multiple-choice data, each choice's summed
log-likelihood as a continuation of the text (lm-evaluation-harness's ``loglikelihood``).
What a pair of models keeps (KL, top-1 agreement) is computed in :mod:`.causal_lm_pairs`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import MissingGold, MissingOutput, ModelLoadError
from ..models.base import Backend, forward_counter
from ..outputs import ModelOutputs
from .classification import architectures

#: Rows of (positions x vocabulary) turned into float64 at once: bounds the memory of one step.
_CELLS = 1 << 21


@dataclass(frozen=True)
class Segment:
    """One window of one text: tokens ``start:end`` of text ``text``, predicting positions ``first:end``."""

    text: int
    start: int
    end: int
    first: int


def context_length(backend: Backend) -> int | None:
    """The most tokens the model reads at once (config.json's positions, or the tokenizer's limit)."""
    config = backend.config()
    bounds = [config.get(k) for k in ("max_position_embeddings", "n_positions", "n_ctx")]
    bounds.append(getattr(backend.tokenizer, "model_max_length", None))
    known = [b for b in bounds if isinstance(b, int) and 1 < b < 1_000_000]  # tokenizers say 1e30 for "no limit"
    return min(known) if known else None


def window_size(backends: Sequence[Backend], max_length: int) -> int:
    """The window both (all) models can read: the smallest context, and never more than ``max_length``."""
    from ..errors import UsageError

    contexts = [c for c in (context_length(b) for b in backends) if c is not None]
    window = min([max_length, *contexts])
    if window < 2:
        raise UsageError(f"A causal LM predicts a token from the ones before it, so it needs windows of at least 2 "
                         f"tokens; max_length is {max_length} (model context: {min(contexts, default='not stated')})")
    return window


def overlap_of(window: int, doc_stride: int | None) -> int:
    """Tokens each window shares with the one before (its context-only head): ``doc_stride``, else half a window.
    A ``doc_stride`` that leaves a window nothing new to predict is a usage error naming both."""
    from ..errors import UsageError

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


def tokenize(backend: Backend, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text's token ids as the model's tokenizer makes them, truncated at ``max_length`` tokens."""
    return [list(ids) for ids in backend.tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def segments(ids: Sequence[Sequence[int]], window: int, overlap: int) -> list[Segment]:
    """Every text's windows (a text the tokenizer made no tokens of has none)."""
    return [Segment(i, s, e, f) for i, tokens in enumerate(ids) if tokens
            for s, e, f in windows(len(tokens), window, overlap)]


def stream(backends: Sequence[Backend], ids: Sequence[Sequence[int]], pieces: Sequence[Segment], *, batch_size: int,
           need_hidden: bool, model_names: Sequence[str]) -> Iterator[tuple[Segment, list[np.ndarray], list[Any]]]:
    """Each segment with every model's logits (tokens, vocabulary) and hidden states (or None) for it.

    All models read the same length-sorted, padded batches, one batch in memory at a time: the
    memory of a run is one batch's logits per model, whatever the number of texts.
    """
    encoded = {"input_ids": [ids[p.text][p.start:p.end] for p in pieces]}
    encoded["attention_mask"] = [[1] * len(x) for x in encoded["input_ids"]]
    for index, batch in backends[0].batches(encoded, ["input_ids", "attention_mask"], batch_size):
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
            piece, length = pieces[i], pieces[i].end - pieces[i].start
            yield (piece, [np.asarray(r[0][row, :length]) for r in results],
                   [None if r[1] is None else np.asarray(r[1][row, :length], dtype=np.float32) for r in results])


def _architectures(backend: Backend) -> str:
    return ", ".join(backend.config().get("architectures") or []) or "not stated"


def predicted_rows(piece: Segment, logits: np.ndarray) -> np.ndarray:
    """The logits rows that predict positions ``first:end`` of the segment (row t predicts token t + 1)."""
    return logits[piece.first - 1 - piece.start : piece.end - 1 - piece.start]


def chunks(rows: int, vocabulary: int) -> Iterator[slice]:
    step = max(1, _CELLS // max(1, vocabulary))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def require_finite(logits: np.ndarray, model: str, eval_set: EvalSet, text: int) -> None:
    """A model that computes NaN or infinity is broken: an error naming it (a NaN logit would otherwise be read as
    a token of probability 0, and the figures would look plausible)."""
    if not np.isfinite(logits).all():
        raise ModelLoadError(
            f"Model {model!r} computed non-finite logits (NaN or infinity) on text {eval_set.ids[text]!r} of "
            f"{eval_set.name!r}; a broken export or quantization cannot be gated: check the model")


def run(backend: Backend, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
    """One model over ``eval_set``: per-position log-probabilities of the actual tokens, top tokens, embeddings
    (and each choice's log-likelihood on multiple-choice data); ``progress(done, total)`` after each window."""
    from ..characteristics.output_agreement import log_softmax

    name = backend.spec.name
    ids = tokenize(backend, eval_set.texts, settings.max_length)
    window = window_size([backend], settings.max_length)
    overlap = overlap_of(window, settings.doc_stride)
    counts = np.array([max(0, len(t) - 1) for t in ids], dtype=np.int64)
    width = int(counts.max(initial=0))
    logprobs, tops = np.zeros((len(ids), width)), np.full((len(ids), width), -1, dtype=np.int64)
    mean, last = [None] * len(ids), [None] * len(ids)
    pieces = segments(ids, window, overlap)
    for done, (piece, (logits,), (hidden,)) in enumerate(stream([backend], ids, pieces, batch_size=settings.batch_size,
                                                                need_hidden=True, model_names=[name]), 1):
        rows, targets = predicted_rows(piece, logits), np.asarray(ids[piece.text][piece.first:piece.end])
        at = slice(piece.first - 1, piece.end - 1)  # where the segment's positions go in the text's row
        for part in chunks(len(rows), logits.shape[-1]):
            require_finite(rows[part], name, eval_set, piece.text)
            log_p = log_softmax(rows[part])
            logprobs[piece.text, at][part] = log_p[np.arange(len(log_p)), targets[part]]
            tops[piece.text, at][part] = np.argmax(log_p, axis=-1)
        if piece.start == 0 and hidden is not None:  # a text's embedding: its first window, as QA does
            mean[piece.text], last[piece.text] = hidden.mean(axis=0), hidden[-1]
        if progress is not None:
            progress(done, len(pieces))
    forward_counter.runs += 1
    scores = choice_scores(backend, eval_set, settings, window) if eval_set.is_multiple_choice else None
    stack = lambda parts: np.stack(parts) if all(p is not None for p in parts) else None  # noqa: E731
    return ModelOutputs(logits=None, cls=None, mean=stack(mean), last=stack(last), token_counts=counts,
                        token_logprobs=logprobs, top_tokens=tops, choice_scores=scores)


def choice_scores(backend: Backend, eval_set: EvalSet, settings: Any, window: int) -> np.ndarray:
    """Each row's choices scored as continuations of its text: the summed log-probability of the choice's tokens.

    As lm-evaluation-harness's ``loglikelihood``: the continuation's tokens are those of text + choice past
    the tokens of the text alone; a pair longer than the window loses tokens from the left of the text.
    Shape (rows, most choices), -inf past a row's choices.
    """
    from ..characteristics.output_agreement import log_softmax
    from ..errors import DatasetError

    name = backend.spec.name
    contexts = backend.tokenizer(list(eval_set.texts))["input_ids"]
    pairs = [(i, c) for i, options in enumerate(eval_set.choices) for c in range(len(options))]
    whole = backend.tokenizer([eval_set.texts[i] + eval_set.choices[i][c] for i, c in pairs])["input_ids"]
    ids, pieces = [], []
    for k, ((i, c), tokens) in enumerate(zip(pairs, whole)):
        continuation = len(tokens) - len(contexts[i])
        if list(tokens[: len(contexts[i]) - 1]) != list(contexts[i][:-1]) or (
                len(contexts[i]) and contexts[i][-1] == getattr(backend.tokenizer, "eos_token_id", None)):
            raise DatasetError(
                f"Dataset {eval_set.name!r}, row {eval_set.ids[i]!r}: under model {name!r}'s tokenizer the text alone "
                f"is not a prefix of the text with choice {c} ({eval_set.choices[i][c]!r}) (a tokenizer that appends an "
                f"end-of-text token, or merges across the boundary), so the choice's own tokens cannot be told apart; "
                f"give the model's tokenizer without add_eos_token, or start each choice with a space")
        if continuation < 1 or continuation >= window:
            said = "no tokens of its own" if continuation < 1 else f"{continuation} tokens, more than a {window}-token window allows"
            raise DatasetError(f"Dataset {eval_set.name!r}: choice {c} ({eval_set.choices[i][c]!r}) of row "
                               f"{eval_set.ids[i]!r} has {said} after its text under model {name!r}'s tokenizer")
        kept = list(tokens)[-window:]
        ids.append(kept)
        pieces.append(Segment(k, 0, len(kept), len(kept) - continuation))
    scores = np.full((len(eval_set), max(map(len, eval_set.choices))), -np.inf)
    for piece, (logits,), _ in stream([backend], ids, pieces, batch_size=settings.batch_size, need_hidden=False,
                                      model_names=[name]):
        rows, targets = predicted_rows(piece, logits), np.asarray(ids[piece.text][piece.first:piece.end])
        total = 0.0
        for part in chunks(len(rows), logits.shape[-1]):
            require_finite(rows[part], name, eval_set, pairs[piece.text][0])
            log_p = log_softmax(rows[part])
            total += float(log_p[np.arange(len(log_p)), targets[part]].sum())
        scores[pairs[piece.text]] = total
    return scores


def outputs(engine: Any, model: Any, eval_set: EvalSet, check: str) -> ModelOutputs:
    """``model``'s causal-LM outputs on ``eval_set``; a model that is no causal LM is named."""
    found = engine.outputs(model, eval_set)
    if found.token_counts is None:
        raise MissingOutput(
            f"Model {model.name!r} was not read as a causal language model (architectures: "
            f"{architectures(engine, model)}), which {check} needs; set task = \"causal-lm\"")
    return found


def choices_picked(engine: Any, model: Any, eval_set: EvalSet, check: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(picked choice, gold choice, probability of the gold choice among the row's choices) per row.

    A model picks the choice of highest summed log-likelihood; the gold choice's probability is the
    softmax of the choices' log-likelihoods at the gold one (to rank the rows that changed most).
    """
    if not eval_set.is_multiple_choice:
        raise MissingGold(
            f"Dataset {eval_set.name!r} has no choices, which {check} needs on a causal LM (a causal LM picks among "
            f"choices: give columns context, choices (a JSON list or |-separated) and label (the gold choice's index))")
    gold = np.asarray(eval_set.require_labels(check), dtype=np.int64)
    scores = outputs(engine, model, eval_set, check).choice_scores
    if scores is None:
        raise ModelLoadError(f"Model {model.name!r} has no choice scores on {eval_set.name!r}")
    shifted = scores - scores.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return scores.argmax(axis=1), gold, probabilities[np.arange(len(gold)), gold]
