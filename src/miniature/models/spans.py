"""Extractive-QA span decoding: the best answer span of each window, and of each question over its windows.

A window is one (question, slice of context) input of at most ``max_length`` tokens; long
contexts are covered by several overlapping windows (``stride`` tokens of overlap). A span
(i, j) scores ``start[i] + end[j]``; it must lie in the context part of the window, with
``i <= j < i + max_answer_length``. The no-answer score is ``start[0] + end[0]`` (the [CLS]
token), as BERT's SQuAD 2.0 recipe does.
"""

from __future__ import annotations

import numpy as np


def best_span(start: np.ndarray, end: np.ndarray, context: np.ndarray, max_answer_length: int) -> tuple[int, int, float]:
    """(i, j, score) of the best valid span of one window, or (-1, -1, -inf) when it has no context token."""
    start, end, context = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64), np.asarray(context, bool)
    n = len(start)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    valid = (j >= i) & (j - i < max_answer_length) & context[:, None] & context[None, :]
    if not valid.any():
        return -1, -1, float("-inf")
    scores = np.where(valid, start[:, None] + end[None, :], -np.inf)
    flat = int(np.argmax(scores))  # first maximum in row-major order: the earliest start, then the shortest span
    return flat // n, flat % n, float(scores.flat[flat])


def decide(span_score: float, null_score: float, null_threshold: float) -> bool:
    """Whether to answer: the best span must beat the no-answer score by more than ``null_threshold``."""
    return np.isfinite(span_score) and not (null_score - span_score > null_threshold)
