"""Greedy generation by causal LMs: each prompt continued alone, one token at a time.

A prompt is a text of the data set, tokenized as the model's tokenizer makes it (its own special tokens) and
cut to ``prompt_tokens`` tokens, fewer where the window would not hold the continuation (the last step reads
the prompt and all but the last new token). Each prompt is continued on its own, unpadded: greedy decoding
turns a rounding difference at a near-tie into a different text, so a continuation must never depend on what
else is generated beside it. Each step reads the whole sequence again, with no key/value cache: the same for
transformers models and ONNX exports (which have none). That costs ``new_tokens`` forward passes of up to
``prompt + new_tokens`` tokens each, against one such pass with a cache: about ``new_tokens / 2`` times the
work of reading the continued text once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..data import EvalSet
from ..errors import DatasetError, UsageError
from ..models.base import Backend, forward_counter
from .token_windows import require_finite, tokenize, window_size


def prompts(backend: Backend, eval_set: EvalSet, *, prompt_tokens: int, new_tokens: int, max_length: int) -> list[list[int]]:
    """Each text's prompt: its first tokens, as many as ``prompt_tokens`` and the window (``max_length`` and the
    model's context) allow beside ``new_tokens`` new ones."""
    window = window_size([backend], max_length)
    room = window - new_tokens + 1
    if room < 1:
        raise UsageError(f"new_tokens ({new_tokens}) leaves no room for a prompt in the {window}-token window of model "
                         f"{backend.spec.name!r} (the smaller of max_length and its context): give new_tokens below "
                         f"{window}")
    ids = tokenize(backend, eval_set.texts, min(prompt_tokens, room))
    empty = [eval_set.ids[i] for i, tokens in enumerate(ids) if not tokens]
    if empty:
        raise DatasetError(f"Dataset {eval_set.name!r}: text {empty[0]!r} has no tokens under model {backend.spec.name!r}'s "
                           f"tokenizer, so there is no prompt to continue")
    return ids


def _next_tokens(backend: Backend, sequence: Sequence[int], eval_set: EvalSet, text: int) -> np.ndarray:
    """The model's logits at every position of one unpadded sequence (positions x vocabulary)."""
    batch = {"input_ids": np.asarray([sequence], dtype=np.int64), "attention_mask": np.ones((1, len(sequence)), np.int64)}
    logits, _ = backend.checked_forward(batch, need_hidden=False)
    forward_counter.batches += 1
    rows = np.asarray(logits[0])
    require_finite(rows, backend.spec.name, eval_set, text)
    return rows


def generate(backend: Backend, starts: Sequence[Sequence[int]], new_tokens: int, eval_set: EvalSet,
             progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(prompts, new_tokens): each prompt's greedy continuation, the most likely next token at each step (the first
    of equally likely ones, as argmax)."""
    out = np.zeros((len(starts), new_tokens), dtype=np.int64)
    for i, start in enumerate(starts):
        sequence = list(start)
        for step in range(new_tokens):
            token = int(np.argmax(_next_tokens(backend, sequence, eval_set, i)[-1]))
            out[i, step] = token
            sequence.append(token)
        if progress is not None:
            progress(i + 1, len(starts))
    forward_counter.runs += 1
    return out


def follow(backend: Backend, starts: Sequence[Sequence[int]], continuations: np.ndarray, eval_set: EvalSet) -> np.ndarray:
    """(prompts, new_tokens): whether the model's most likely next token, read along each prompt's given
    continuation (teacher-forced), is the continuation's token at each step."""
    out = np.zeros(continuations.shape, dtype=bool)
    for i, start in enumerate(starts):
        tokens = list(continuations[i])
        rows = _next_tokens(backend, [*start, *tokens[:-1]], eval_set, i)[len(start) - 1:]
        out[i] = rows.argmax(axis=-1) == np.asarray(tokens)
    forward_counter.runs += 1
    return out
