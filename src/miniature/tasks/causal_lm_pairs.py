"""A pair of causal LMs read side by side: per position KL(p_ref || p_cand), top-1 agreement and log-probabilities.

KL divergence and top-1 agreement need both models' full distributions over the vocabulary at
once. Keeping a model's logits for later would take n x tokens x vocabulary floats (1,000 texts of
256 tokens with a 50k vocabulary: 51 GB of float32), so both models read the same batches together
and each position's statistics are computed as soon as both distributions exist; then the batch's
logits are dropped. Nothing is approximated: each position's KL is the float64 sum over the full
vocabulary that the classification KL computes. Memory: one batch of logits per model, whatever n.

The engine keeps the result (about 25 bytes a position) in memory and in the disk cache, keyed by both
models' fingerprints, the data and the settings that change the windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import NotApplicable
from ..evidence import PositionStatistics
from ..maths import kl_from_log_probabilities
from .token_windows import (
    chunks,
    log_probabilities,
    overlap_of,
    picked,
    predicted_rows,
    require_finite,
    segments,
    stream,
    tokenize,
    window_size,
    windows_per_batch,
)


def compare_side_by_side(backends: list, names: list[str], eval_set: EvalSet, settings: Any, task: str) -> PositionStatistics:
    """Both models over the same windows of ``eval_set``, one batch at a time; per position KL(p_ref || p_cand),
    top-token agreement and each model's log-probability of the actual next token."""
    ids = tokenize(backends[0], eval_set.texts, settings.max_length)
    if ids != tokenize(backends[1], eval_set.texts, settings.max_length):
        raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} tokenize the texts of {eval_set.name!r} differently "
                            f"(their tokenizer settings differ), so their next-token distributions cannot be compared")
    window = window_size(backends, settings.max_length)
    counts = np.array([max(0, len(t) - 1) for t in ids], dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    total = int(counts.sum())
    if total == 0:
        raise NotApplicable(f"No text of {eval_set.name!r} has two tokens, so no position predicts a next token")
    kl, same = np.zeros(total), np.zeros(total, dtype=bool)
    ref_logprob, cand_logprob = np.zeros(total), np.zeros(total)
    pieces = segments(ids, window, overlap_of(window, settings.doc_stride))
    per_batch = windows_per_batch(backends, window, settings.logits_memory)
    for piece, (ref_logits, cand_logits), _ in stream(backends, ids, pieces, batch_size=per_batch, need_hidden=False,
                                                      model_names=names):
        if ref_logits.shape[-1] != cand_logits.shape[-1]:
            raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} predict over {ref_logits.shape[-1]} and "
                                f"{cand_logits.shape[-1]} tokens, so their next-token distributions cannot be compared")
        rows = [predicted_rows(piece, ref_logits), predicted_rows(piece, cand_logits)]
        targets = np.asarray(ids[piece.text][piece.first:piece.stop])
        at = offsets[piece.text] + piece.first - 1
        for part in chunks(len(targets), ref_logits.shape[-1]):
            for name, r in zip(names, rows):
                require_finite(r[part], name, eval_set, piece.text)
            log_p, log_q = log_probabilities(rows[0][part]), log_probabilities(rows[1][part])
            where = slice(at + part.start, at + part.stop)
            kl[where] = kl_from_log_probabilities(log_p, log_q).numpy()
            same[where] = (log_p.argmax(-1) == log_q.argmax(-1)).numpy()
            ref_logprob[where], cand_logprob[where] = picked(log_p, targets[part]), picked(log_q, targets[part])
    return PositionStatistics(counts, kl, same, ref_logprob, cand_logprob, task=task)
