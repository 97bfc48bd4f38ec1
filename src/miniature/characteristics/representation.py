"""Characteristic 2 of the paper (section 4): do two models see the same neighbours?

For each eval point P, KNN_i(P) is the set of the K nearest other points by cosine
similarity of model i's embeddings; the agreement at P is Jaccard(KNN_ref(P), KNN_cand(P)).
The paper reports the mean and variance over points (Table 2) and a K sweep (Figure 1a/b).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .bootstrap import RESAMPLES, bootstrap_intervals, weighted_mean
from .neighbours import nearest_others
from .result import Agreement


def neighbour_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r"""Row-wise Jaccard of two (n, k) arrays of neighbour indices, each row without repeats.

    .. math:: J_d = \frac{|A_d \cap B_d|}{|A_d \cup B_d|} = \frac{c_d}{2k - c_d}

    where c_d counts the indices in both rows: after sorting the concatenated row, every
    shared index appears twice in a row, so c_d is the number of equal neighbours. Vectorised:
    no Python set per point.

    >>> neighbour_jaccard(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])).tolist()
    [0.5]
    """
    if a.shape != b.shape:
        raise ValueError(f"Expected neighbour arrays of one shape but got {a.shape} and {b.shape}")
    k = a.shape[1]
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    shared = (both[:, 1:] == both[:, :-1]).sum(axis=1)
    return shared / (2 * k - shared)


class KnnAgreement(Agreement):
    """Mean per-point KNN Jaccard of a pair: a float, with ``variance``, ``per_point``, ``k``, ``n`` and more."""

    metric = "knn_agreement"

    def __repr__(self) -> str:
        return (f"KnnAgreement({float(self):.4f}, variance={self.variance:.4f}, k={self.k}, "
                f"reference={self.reference!r}, candidate={self.candidate!r}, n={self.n})")


def compare_neighbourhoods(
    ids: Sequence[str],
    reference_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    *,
    ks: Sequence[int] = (10,),
    reference: str = "reference",
    candidate: str = "candidate",
    dataset: str = "",
    pooling: str = "cls",
    resamples: int = RESAMPLES,
    seed: int = 0,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[int, KnnAgreement]:
    """KNN agreement of two embeddings of the same points for every K in ``ks``, from one search.

    Embeddings may differ in width (models of different sizes); rows must be the same points.
    ``interval`` is a seeded bootstrap 95% interval of the mean over points (``resamples=0``: none).
    ``neighbours``: each model's :func:`nearest_others` for at least the largest K, when already known.
    """
    n = len(ids)
    if reference_embeddings.shape[0] != n or candidate_embeddings.shape[0] != n:
        raise ValueError(
            f"Expected {n} embeddings from each model but got {reference_embeddings.shape[0]} "
            f"and {candidate_embeddings.shape[0]}"
        )
    ks = sorted(set(ks))
    if not ks or ks[0] < 1 or ks[-1] > n - 1:
        raise ValueError(f"Expected every K in 1..{n - 1} (n - 1 for {n} points) but got {list(ks)}")
    if neighbours is None:
        ref_nn, cand_nn = nearest_others(reference_embeddings, ks[-1]), nearest_others(candidate_embeddings, ks[-1])
    else:
        ref_nn, cand_nn = neighbours
        if min(ref_nn.shape[1], cand_nn.shape[1]) < ks[-1]:
            raise ValueError(f"Expected precomputed neighbours for K >= {ks[-1]}")
    # Rows are sorted by similarity, so the first k columns are the k nearest.
    per_k = {k: neighbour_jaccard(ref_nn[:, :k], cand_nn[:, :k]) for k in ks}
    intervals = (bootstrap_intervals([weighted_mean(per_k[k]) for k in ks], n, resamples=resamples, seed=seed)
                 if resamples else [None] * len(ks))
    results = {}
    for k, interval in zip(ks, intervals):
        per_point = per_k[k]
        order = np.argsort(per_point, kind="stable")
        results[k] = KnnAgreement(
            float(per_point.mean()),
            interval=interval,
            variance=float(per_point.var()),
            per_point=per_point,
            k=k,
            n=n,
            reference=reference,
            candidate=candidate,
            dataset=dataset,
            pooling=pooling,
            lowest_ids=[ids[i] for i in order[:10]],
        )
    return results
