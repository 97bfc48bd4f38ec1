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

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import NotApplicable
from ..evidence import PositionStatistics
from ..maths import kl_from_log_probabilities
from .token_windows import (
    Segment,
    chunks,
    forward,
    log_probabilities,
    overlap_of,
    padded_batches,
    picked,
    predicted_rows,
    segments,
    tokenize,
    window_size,
    windows_per_batch,
)


@dataclass(frozen=True)
class PairPlan:
    """How a pair reads a data set: every text's token ids, its predicted positions (``counts``, and where each
    text's begin in the flat arrays: ``offsets``), its windows (``pieces``) and the length-sorted, padded batches
    of them both models read (``batches``: piece indices and arrays). Made from the tokenizers alone, so the Ray
    engine's driver makes it and hands the batches, in shards, to actors that hold the weights."""

    ids: list[list[int]]
    counts: np.ndarray
    offsets: np.ndarray
    pieces: list[Segment]
    batches: list[tuple[np.ndarray, dict[str, np.ndarray]]]

    def work(self, batches: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[int, tuple[Segment, np.ndarray]]:
        """What computing ``batches`` needs beside them: each of their pieces, with its target tokens."""
        return {int(i): (self.pieces[i], np.asarray(self.ids[self.pieces[i].text][self.pieces[i].first:self.pieces[i].stop]))
                for index, _ in batches for i in index}


def plan_pair(backends: list, names: list[str], eval_set: EvalSet, settings: Any) -> PairPlan:
    """The pair's :class:`PairPlan` on ``eval_set``; a pair that tokenizes the texts differently cannot be compared."""
    ids = tokenize(backends[0], eval_set.texts, settings.max_length)
    # A GGUF's vocabulary was compared with its pair's id by id (check_pair): both read the reference's ids, however
    # the GGUF's own tokenizer (llama.cpp's, or the files beside it) would have cut the text: one tokenization.
    shared = any(getattr(b, "takes_reference_ids", False) for b in backends)
    if not shared and ids != tokenize(backends[1], eval_set.texts, settings.max_length):
        raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} tokenize the texts of {eval_set.name!r} differently "
                            f"(their tokenizer settings differ), so their next-token distributions cannot be compared")
    window = window_size(backends, settings.max_length)
    counts = np.array([max(0, len(t) - 1) for t in ids], dtype=np.int64)
    if int(counts.sum()) == 0:
        raise NotApplicable(f"No text of {eval_set.name!r} has two tokens, so no position predicts a next token")
    pieces = segments(ids, window, overlap_of(window, settings.doc_stride))
    per_batch = windows_per_batch(backends, window, settings.logits_memory)
    return PairPlan(ids, counts, np.cumsum(counts) - counts, pieces,
                    list(padded_batches(backends[0], ids, pieces, per_batch)))


def shard_statistics(backends: list, names: list[str], batches: list[tuple[np.ndarray, dict[str, np.ndarray]]],
                     work: dict[int, tuple[Segment, np.ndarray]], eval_set: EvalSet) -> dict[int, tuple[np.ndarray, ...]]:
    """Both models over ``batches``: for each piece, per predicted position, KL(p_ref || p_cand), whether the top
    tokens agree, and each model's log-probability of the actual next token."""
    lengths = {i: piece.end - piece.start for i, (piece, _) in work.items()}
    out = {}
    for i, (ref_logits, cand_logits), _ in forward(backends, batches, lengths, need_hidden=False, model_names=names):
        if ref_logits.shape[-1] != cand_logits.shape[-1]:
            raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} predict over {ref_logits.shape[-1]} and "
                                f"{cand_logits.shape[-1]} tokens, so their next-token distributions cannot be compared")
        piece, targets = work[i]
        rows = [predicted_rows(piece, ref_logits), predicted_rows(piece, cand_logits)]
        kl, same = np.zeros(len(targets)), np.zeros(len(targets), dtype=bool)
        ref_logprob, cand_logprob = np.zeros(len(targets)), np.zeros(len(targets))
        for part in chunks(len(targets), ref_logits.shape[-1]):
            log_p, log_q = (log_probabilities(r[part], name, eval_set, piece.text) for name, r in zip(names, rows))
            kl[part] = kl_from_log_probabilities(log_p, log_q, finite=True).numpy()
            same[part] = (log_p.argmax(-1) == log_q.argmax(-1)).numpy()
            ref_logprob[part], cand_logprob[part] = picked(log_p, targets[part]), picked(log_q, targets[part])
        out[i] = (kl, same, ref_logprob, cand_logprob)
    return out


def merge(plan: PairPlan, parts: dict[int, tuple[np.ndarray, ...]], task: str) -> PositionStatistics:
    """The pair's statistics, text after text, from every piece's (wherever they were computed)."""
    total = int(plan.counts.sum())
    kl, same = np.zeros(total), np.zeros(total, dtype=bool)
    ref_logprob, cand_logprob = np.zeros(total), np.zeros(total)
    for i, (piece_kl, piece_same, piece_ref, piece_cand) in parts.items():
        piece = plan.pieces[i]
        at = plan.offsets[piece.text] + piece.first - 1
        where = slice(at, at + len(piece_kl))
        kl[where], same[where], ref_logprob[where], cand_logprob[where] = piece_kl, piece_same, piece_ref, piece_cand
    return PositionStatistics(plan.counts, kl, same, ref_logprob, cand_logprob, task=task)

