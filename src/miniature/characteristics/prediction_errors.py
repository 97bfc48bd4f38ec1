"""Characteristic 1 of the paper (section 3): do two models get the same points wrong?

Pure functions over id sets and arrays; nothing here loads or runs a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .bootstrap import RESAMPLES, bootstrap_interval, weighted_jaccard
from .result import Agreement


def error_set(ids: Sequence[str], predictions: np.ndarray, gold: np.ndarray) -> frozenset[str]:
    """E = the ids of the points whose prediction differs from the gold label."""
    predictions, gold = np.asarray(predictions), np.asarray(gold)
    if not len(ids) == len(predictions) == len(gold):
        raise ValueError(
            f"Expected ids, predictions and gold of one length but got {len(ids)}, {len(predictions)}, {len(gold)}"
        )
    return frozenset(np.asarray(ids, dtype=object)[predictions != gold].tolist())


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    r"""Jaccard coefficient of two sets.

    .. math:: J(A, B) = \frac{|A \cap B|}{|A \cup B|}, \qquad J(\emptyset, \emptyset) = 1

    Two empty sets agree perfectly: neither model makes an error the other does not.

    >>> jaccard({"a", "b"}, {"b", "c"})
    0.3333333333333333
    >>> jaccard(set(), set())
    1.0
    """
    a, b = set(a), set(b)
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def negative_flip_rate(reference_errors: Iterable[str], candidate_errors: Iterable[str], n: int) -> float:
    r"""Share of all ``n`` points the reference gets right and the candidate gets wrong.

    .. math:: \mathrm{NFR} = \frac{|E_{cand} \setminus E_{ref}|}{n}
    """
    if n <= 0:
        raise ValueError(f"Expected n >= 1 points but got n={n}")
    return len(set(candidate_errors) - set(reference_errors)) / n


class ErrorJaccard(Agreement):
    """Error-set Jaccard of a (reference, candidate) pair: a float, with the details attached.

    Attributes: ``n``, ``reference``, ``candidate``, ``dataset``, ``accuracy_reference``,
    ``accuracy_candidate``, ``errors_reference`` (|E_ref|), ``errors_candidate``,
    ``errors_both`` (|E_ref ∩ E_cand|), ``reference_subset`` (E_ref ⊆ E_cand),
    ``negative_flip_rate``, ``both_empty``, and ``differing_ids``: the ids in exactly one
    error set, the largest change in gold-class probability first.
    """

    metric = "error_jaccard"


def compare_errors(
    ids: Sequence[str],
    *,
    reference_predictions: np.ndarray,
    reference_gold: np.ndarray,
    candidate_predictions: np.ndarray,
    candidate_gold: np.ndarray,
    reference_gold_probability: np.ndarray | None = None,
    candidate_gold_probability: np.ndarray | None = None,
    reference: str = "reference",
    candidate: str = "candidate",
    dataset: str = "",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> ErrorJaccard:
    """Compare the error sets of two models on the same points.

    Gold labels are given per model because each model may number the classes differently.
    ``interval`` is a seeded bootstrap 95% interval over points (``resamples=0``: none).
    """
    n = len(ids)
    if n == 0:
        raise ValueError("Expected at least one evaluation point but got none")
    e_ref = error_set(ids, reference_predictions, reference_gold)
    e_cand = error_set(ids, candidate_predictions, candidate_gold)
    differing = e_ref ^ e_cand
    position = {point: i for i, point in enumerate(ids)}
    if reference_gold_probability is not None and candidate_gold_probability is not None:
        shift = np.abs(np.asarray(reference_gold_probability) - np.asarray(candidate_gold_probability))
        ranked = sorted(differing, key=lambda p: (-shift[position[p]], position[p]))
    else:
        ranked = sorted(differing, key=position.__getitem__)
    in_ref = np.asarray(reference_predictions) != np.asarray(reference_gold)
    in_cand = np.asarray(candidate_predictions) != np.asarray(candidate_gold)
    interval = bootstrap_interval(weighted_jaccard(in_ref, in_cand), n, resamples=resamples, seed=seed) if resamples else None
    return ErrorJaccard(
        jaccard(e_ref, e_cand),
        interval=interval,
        n=n,
        reference=reference,
        candidate=candidate,
        dataset=dataset,
        accuracy_reference=1 - len(e_ref) / n,
        accuracy_candidate=1 - len(e_cand) / n,
        errors_reference=len(e_ref),
        errors_candidate=len(e_cand),
        errors_both=len(e_ref & e_cand),
        reference_subset=e_ref <= e_cand,
        negative_flip_rate=negative_flip_rate(e_ref, e_cand, n),
        both_empty=not e_ref and not e_cand,
        differing_ids=ranked,
    )
