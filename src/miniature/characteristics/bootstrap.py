"""Seeded bootstrap confidence intervals over eval points, vectorised over resamples.

A resample draws n points with replacement; it is represented by its multiplicity counts
(a row of a (B, n) matrix), so a statistic over a resample is a weighted sum over points.
Percentile intervals; the same seed gives the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
_CHUNK = 200  # resamples per block: bounds memory to 200 x n counts


def bootstrap_intervals(
    statistics: Sequence[Callable[[np.ndarray], np.ndarray]],
    n: int,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Percentile intervals of several statistics over the same ``resamples`` bootstrap resamples of ``n`` points.

    Each statistic maps a (b, n) matrix of multiplicity counts to b values. Sharing the
    resamples makes a K sweep cost one set of draws, not one per K.
    """
    if n < 1 or resamples < 1:
        raise ValueError(f"Expected n >= 1 and resamples >= 1 but got n={n}, resamples={resamples}")
    rng = np.random.default_rng(seed)
    draws: list[list[np.ndarray]] = [[] for _ in statistics]
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        # Multiplicity counts of n uniform draws per resample (a multinomial), by bincount:
        # several times faster than rng.multinomial over n categories.
        picks = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        for values, statistic in zip(draws, statistics):
            values.append(statistic(counts))
    alpha = (1.0 - confidence) / 2.0
    intervals = []
    for values in draws:
        low, high = np.quantile(np.concatenate(values), [alpha, 1.0 - alpha])
        intervals.append((float(low), float(high)))
    return intervals


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n: int, **options) -> tuple[float, float]:
    """Percentile interval of one statistic; see :func:`bootstrap_intervals`."""
    return bootstrap_intervals([statistic], n, **options)[0]


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
