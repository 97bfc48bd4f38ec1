"""Characteristic 3 of the paper (section 5): do two models flag the same points as out-of-distribution?

Each model is an OOD detector by Deep Nearest Neighbors (Sun et al., ICML 2022): with
L2-normalised features z, a point's score is the distance to its k-th nearest neighbour in
an in-distribution training bank; the threshold keeps ``tpr`` (95%) of in-distribution
validation points; O_i are the challenge points scoring above it. The agreement of two
models is Jaccard(O_ref, O_cand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bootstrap import RESAMPLES, bootstrap_interval, weighted_jaccard
from .neighbours import kth_neighbour_distances
from .prediction_errors import jaccard
from .result import Agreement


def tpr_threshold(validation_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The smallest score that at least ``tpr`` of the in-distribution validation scores do not exceed."""
    if len(validation_scores) == 0:
        raise ValueError("Expected at least one in-distribution validation score but got none")
    return float(np.quantile(np.asarray(validation_scores, dtype=np.float64), tpr, method="inverted_cdf"))


def auroc(scores: np.ndarray, is_ood: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` separating OOD (positive) from ID points; ties count half.

    Computed from ranks (the Mann-Whitney U statistic), O(n log n).
    """
    scores, is_ood = np.asarray(scores, dtype=np.float64), np.asarray(is_ood, dtype=bool)
    positives, negatives = int(is_ood.sum()), int((~is_ood).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both in- and out-of-distribution points")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    unique, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2
    ranks[order] = np.repeat(average, counts)
    u = ranks[is_ood].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def fpr_at_tpr(scores: np.ndarray, is_ood: np.ndarray, tpr: float = 0.95) -> float:
    """Share of OOD points kept as in-distribution when the threshold keeps ``tpr`` of the ID points."""
    scores, is_ood = np.asarray(scores, dtype=np.float64), np.asarray(is_ood, dtype=bool)
    if is_ood.all() or not is_ood.any():
        raise ValueError("FPR@TPR needs both in- and out-of-distribution points")
    threshold = tpr_threshold(scores[~is_ood], tpr)
    return float((scores[is_ood] <= threshold).mean())


@dataclass(frozen=True)
class OodDetection:
    """One model's Deep-NN verdicts on a challenge set."""

    k: int
    threshold: float
    scores: np.ndarray
    flagged: frozenset[str]
    n: int
    auroc: float | None = None
    fpr_at_tpr95: float | None = None

    @property
    def rate(self) -> float:
        return len(self.flagged) / self.n


def detect_ood(
    ids: Sequence[str],
    *,
    bank: np.ndarray,
    validation: np.ndarray,
    challenge: np.ndarray,
    ks: Sequence[int] = (10,),
    tpr: float = 0.95,
    is_ood: np.ndarray | None = None,
) -> dict[int, OodDetection]:
    """Deep-NN detection of OOD challenge points for every k in ``ks`` (one search per set)."""
    if challenge.shape[0] != len(ids):
        raise ValueError(f"Expected {len(ids)} challenge embeddings but got {challenge.shape[0]}")
    val_scores = kth_neighbour_distances(bank, validation, ks)
    chal_scores = kth_neighbour_distances(bank, challenge, ks)
    id_array = np.asarray(ids, dtype=object)
    labelled = is_ood is not None and 0 < int(np.sum(is_ood)) < len(ids)
    out = {}
    for k in sorted(val_scores):
        threshold = tpr_threshold(val_scores[k], tpr)
        scores = chal_scores[k]
        out[k] = OodDetection(
            k=k,
            threshold=threshold,
            scores=scores,
            flagged=frozenset(id_array[scores > threshold].tolist()),
            n=len(ids),
            auroc=auroc(scores, is_ood) if labelled else None,
            fpr_at_tpr95=fpr_at_tpr(scores, is_ood, tpr) if labelled else None,
        )
    return out


class OodAgreement(Agreement):
    """Jaccard of two models' OOD sets on a challenge set: a float, with both detections attached."""

    metric = "ood_agreement"

    def __repr__(self) -> str:
        return (f"OodAgreement({float(self):.4f}, k={self.k}, reference={self.reference!r}, "
                f"candidate={self.candidate!r}, n={self.n})")


def compare_ood(
    ids: Sequence[str],
    reference_detection: OodDetection,
    candidate_detection: OodDetection,
    *,
    reference: str = "reference",
    candidate: str = "candidate",
    dataset: str = "",
    tpr: float = 0.95,
    pooling: str = "cls",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> OodAgreement:
    """Jaccard(O_ref, O_cand); two empty OOD sets agree perfectly (1.0).

    ``interval`` is a seeded bootstrap 95% interval over challenge points, the detectors'
    thresholds held fixed (``resamples=0``: none).
    """
    o_ref, o_cand = reference_detection.flagged, candidate_detection.flagged
    position = {point: i for i, point in enumerate(ids)}
    in_ref = np.array([point in o_ref for point in ids], dtype=bool)
    in_cand = np.array([point in o_cand for point in ids], dtype=bool)
    interval = (bootstrap_interval(weighted_jaccard(in_ref, in_cand), len(ids), resamples=resamples, seed=seed)
                if resamples else None)
    return OodAgreement(
        jaccard(o_ref, o_cand),
        interval=interval,
        k=reference_detection.k,
        n=len(ids),
        tpr=tpr,
        pooling=pooling,
        reference=reference,
        candidate=candidate,
        dataset=dataset,
        reference_detection=reference_detection,
        candidate_detection=candidate_detection,
        both_empty=not o_ref and not o_cand,
        differing_ids=sorted(o_ref ^ o_cand, key=position.__getitem__),
    )
