"""Seeded bootstrap confidence intervals over eval points, vectorised over resamples.

A resample draws n points with replacement; it is represented by its multiplicity counts
(a row of a (B, n) matrix), so a statistic over a resample is a weighted sum over points.
Percentile intervals; the same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
_CHUNK = 200  # resamples per block: bounds memory to 200 x n counts


def bootstrap_interval(
    statistic: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over ``resamples`` bootstrap resamples of ``n`` points.

    ``statistic`` maps a (b, n) matrix of multiplicity counts to b values.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"Expected n >= 1 and resamples >= 1 but got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        values.append(statistic(counts))
    draws = np.concatenate(values)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def weighted_jaccard(in_a: np.ndarray, in_b: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Resample statistic: Jaccard of two sets given as boolean masks over points (empty union: 1)."""
    both = (in_a & in_b).astype(np.float64)
    either = (in_a | in_b).astype(np.float64)

    def statistic(counts: np.ndarray) -> np.ndarray:
        inter, union = counts @ both, counts @ either
        return np.divide(inter, union, out=np.ones_like(inter), where=union > 0)

    return statistic


def weighted_mean(values: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Resample statistic: the mean of per-point ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return lambda counts: counts @ values / len(values)
