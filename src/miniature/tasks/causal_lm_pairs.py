"""A pair of causal LMs read side by side: the per-position statistics KL and top-1 agreement need, cached per pair.

KL(p_ref || p_cand) at a position needs both models' whole distributions over the vocabulary at
once. Keeping a model's logits for later would take n x tokens x vocabulary floats (1,000 texts of
256 tokens with a 50k vocabulary: 51 GB of float32), so both models read the same batches together
and each position's statistics are computed as soon as both distributions exist; then the batch's
logits are dropped. Nothing is approximated: each position's KL is the float64 sum over the full
vocabulary that the classification KL computes. Memory: one batch of logits per model, whatever n.

Kept per pair, in memory and in the disk cache (keyed by both models' fingerprints, the data and the
settings that change the windows): per position the KL, whether the top tokens agree, and the
log-probability of the actual next token under each model (about 25 bytes a position).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cache import cache_key
from ..data import EvalSet
from ..errors import NotApplicable
from .causal_lm import chunks, overlap_of, predicted_rows, require_finite, segments, stream, tokenize, window_size

log = logging.getLogger("miniature")

_FIELDS = ("token_counts", "kl", "same_top", "reference_logprob", "candidate_logprob")


@dataclass(frozen=True)
class PositionStatistics:
    """Per predicted position of every text, text after text (``token_counts`` per text say where each starts)."""

    token_counts: np.ndarray
    kl: np.ndarray
    same_top: np.ndarray
    reference_logprob: np.ndarray
    candidate_logprob: np.ndarray

    def owners(self) -> np.ndarray:
        """The text each position belongs to."""
        return np.repeat(np.arange(len(self.token_counts)), self.token_counts)

    def per_text(self, values: np.ndarray) -> np.ndarray:
        """Per text, the sum of ``values`` over its positions."""
        return np.bincount(self.owners(), weights=np.asarray(values, dtype=np.float64), minlength=len(self.token_counts))


def position_statistics(engine: Any, reference: Any, candidate: Any, eval_set: EvalSet) -> PositionStatistics:
    """The pair's per-position statistics on ``eval_set``: from memory, else the disk cache, else one side-by-side pass."""
    memo_key = ("causal-lm positions", reference.spec.text, candidate.spec.text, eval_set.fingerprint)
    return engine.memo(memo_key, lambda: _cached(engine, reference, candidate, eval_set))


def _cached(engine: Any, reference: Any, candidate: Any, eval_set: EvalSet) -> PositionStatistics:
    # Opened, not loaded: the vocabulary files and the cache key need no weights, so a cache hit loads no model.
    backends = [engine.backend(m) for m in (reference, candidate)]
    _require_shared_vocabulary(backends, reference, candidate)
    settings = engine.settings
    key = cache_key(pair="causal-lm positions", reference=engine.fingerprint(reference),
                    candidate=engine.fingerprint(candidate), dataset=eval_set.fingerprint, max_length=settings.max_length,
                    batch_size=settings.batch_size, doc_stride=settings.doc_stride,
                    placement=[engine.placement_key(b) for b in backends])
    cache = engine.output_cache
    found = cache.get_arrays(key, _FIELDS) if cache else None
    if found is not None and all(v is not None for v in found.values()) and len(found["token_counts"]) == len(eval_set):
        log.info("miniature: %s against %s on %s from cache", candidate.name, reference.name, eval_set.name)
        return PositionStatistics(**found)
    backends = [engine.loaded_backend(m) for m in (reference, candidate)]
    statistics = compare_side_by_side(backends, [reference.name, candidate.name], eval_set, settings)
    if cache:
        cache.put_arrays(key, {f: getattr(statistics, f) for f in _FIELDS},
                         {"reference": reference.spec.text, "candidate": candidate.spec.text, "dataset": eval_set.name})
    return statistics


def _require_shared_vocabulary(backends: list, reference: Any, candidate: Any) -> None:
    from ..models.fingerprint import fingerprint

    vocabularies = [b.tokenizer_files() for b in backends]
    if not all(vocabularies) or fingerprint(vocabularies[0]) != fingerprint(vocabularies[1]):
        raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} do not share a tokenizer (their "
                            f"vocabulary files differ or are missing), so their next-token distributions cannot be "
                            f"compared token by token")


def compare_side_by_side(backends: list, names: list[str], eval_set: EvalSet, settings: Any) -> PositionStatistics:
    """Both models over the same windows of ``eval_set``, one batch at a time; per position KL(p_ref || p_cand),
    top-token agreement and each model's log-probability of the actual next token."""
    from ..characteristics.output_agreement import log_softmax

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
    for piece, (ref_logits, cand_logits), _ in stream(backends, ids, pieces, batch_size=settings.batch_size,
                                                      need_hidden=False, model_names=names):
        if ref_logits.shape[-1] != cand_logits.shape[-1]:
            raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} predict over {ref_logits.shape[-1]} and "
                                f"{cand_logits.shape[-1]} tokens, so their next-token distributions cannot be compared")
        rows = [predicted_rows(piece, ref_logits), predicted_rows(piece, cand_logits)]
        targets = np.asarray(ids[piece.text][piece.first:piece.end])
        at = offsets[piece.text] + piece.first - 1
        for part in chunks(len(targets), ref_logits.shape[-1]):
            for name, r in zip(names, rows):
                require_finite(r[part], name, eval_set, piece.text)
            log_p, log_q = log_softmax(rows[0][part]), log_softmax(rows[1][part])
            where = slice(at + part.start, at + part.stop)
            kl[where] = np.maximum((np.exp(log_p) * (log_p - log_q)).sum(axis=-1), 0.0)
            same[where] = np.argmax(log_p, axis=-1) == np.argmax(log_q, axis=-1)
            index = np.arange(len(log_p)), targets[part]
            ref_logprob[where], cand_logprob[where] = log_p[index], log_q[index]
    return PositionStatistics(counts, kl, same, ref_logprob, cand_logprob)
