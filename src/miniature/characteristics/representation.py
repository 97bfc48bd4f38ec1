"""Characteristic 2 of the paper (section 4): do two models see the same neighbours?

For each eval point P, KNN_i(P) is the set of the K nearest other points by cosine
similarity of model i's embeddings; the agreement at P is Jaccard(KNN_ref(P), KNN_cand(P)).
The paper reports the mean and variance over points (Table 2) and a K sweep (Figure 1a/b).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..evidence import Evidence, Model
from ..validation import check_fraction, check_positive_int
from .base import POSITIVE_INT, Characteristic, Failure, Param, Result, Verdict
from .bootstrap import RESAMPLES, bootstrap_intervals, weighted_mean
from .neighbours import nearest_others
from .render import format_value, sweep_cell, verdict_cell

if TYPE_CHECKING:
    from ..data import EvalSet


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


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class KnnAgreement(Result):
    """Mean per-point KNN Jaccard of a pair, with ``variance``, ``per_point``, ``k``, the pooling, the
    ids whose neighbourhoods agree least, and ``sweep`` = {K: (mean, variance)}."""

    metric = "knn_agreement"
    setting = ("pooling", "k")

    variance: float
    per_point: np.ndarray
    k: int
    pooling: str
    lowest_ids: list[str]
    sweep: dict[int, tuple[float, float]] | None = None


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
            value=float(per_point.mean()),
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


# -- the characteristic ---------------------------------------------------------------------------


def sweep_ks(k: int, sweep: Sequence[int], limit: int) -> list[int]:
    """``k`` plus the sweep's values that the data allows (a K sweep must not fail a small set)."""
    return sorted({k, *(s for s in sweep if 1 <= s <= limit)})


def knn_agreement(
    reference: Model,
    candidate: Model,
    eval_set: EvalSet,
    *,
    k: int = 10,
    pooling: str | None = None,
    sweep: Sequence[int] | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
) -> KnnAgreement:
    """Mean Jaccard of each point's K nearest other points under the two models (paper, section 4).

    Embeddings are the last layer's CLS vectors (``pooling="mean"``: the mean over the
    attention mask), L2-normalised; neighbours by exact cosine search. The result carries
    ``variance``, ``per_point``, and ``sweep`` = {K: (mean, variance)} over ``sweep`` (default:
    the session's settings, the paper's Figure 1a/b). Labels are not needed.
    """
    params = {"k": check_positive_int(k, "k", "knn_agreement"), "pooling": pooling, "sweep": sweep}
    return DataRepresentation().run("knn_agreement", reference, candidate, {"eval": eval_set}, params,
                                    resamples=resamples, record=record)


def assert_knn_agreement(
    reference: Model, candidate: Model, eval_set: EvalSet, *, min: float, k: int = 10, pooling: str | None = None
) -> KnnAgreement:
    """Fail unless the mean KNN agreement (K = ``k``) of the pair is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_knn_agreement")
    params = {"k": check_positive_int(k, "k", "assert_knn_agreement"), "pooling": pooling}
    return DataRepresentation().run("assert_knn_agreement", reference, candidate, {"eval": eval_set}, params,
                                    threshold=threshold)


class DataRepresentation(Characteristic):
    """Do two models see the same neighbours? Mean per-point Jaccard of the K nearest other points."""

    name = "knn_agreement"
    title = "data representation, per-point KNN Jaccard (paper section 4):"
    summary = "mean per-point Jaccard of each eval point's K nearest neighbours under the two models"
    params = {"k": Param(POSITIVE_INT, 10)}
    needs = {"eval": "eval set"}
    outputs = ("embeddings",)
    figure = ("Data representation: mean KNN agreement against K", "K")
    result_type = KnnAgreement

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> KnnAgreement:
        eval_set = data["eval"]
        k = params.get("k", 10)
        pooling = params.get("pooling") or evidence.settings.pooling
        sweep = params.get("sweep")
        if k > len(eval_set) - 1:
            raise UsageError(
                f"The 'k' parameter of knn_agreement must be at most n - 1 = {len(eval_set) - 1} for the "
                f"{len(eval_set)} points of {eval_set.name!r}. Got {k} instead."
            )
        check = "the data-representation check"
        ks = sweep_ks(k, evidence.settings.sweep if sweep is None else sweep, len(eval_set) - 1)
        results = compare_neighbourhoods(
            eval_set.ids,
            evidence.embeddings(reference, eval_set, pooling, check=check),
            evidence.embeddings(candidate, eval_set, pooling, check=check),
            ks=ks, reference=reference.name, candidate=candidate.name, dataset=eval_set.name, pooling=pooling,
            neighbours=tuple(evidence.neighbours(m, eval_set, pooling, ks[-1], check=check) for m in (reference, candidate)),
            resamples=resamples,
        )
        return dataclasses.replace(results[k], sweep={kk: (float(r), r.variance) for kk, r in results.items()})

    def pair_params(self, result: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        return {"k": result["k"], "pooling": result["pooling"], "sweep": ()}

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[r["reference"], r["candidate"], r["dataset"], r["n"], r["pooling"], r["k"], format_value(r),
                 f"{r['variance']:.4f}", sweep_cell(r), verdict_cell(r)] for r in results]
        return ["reference", "candidate", "eval", "n", "pooling", "K", "mean [95% CI]", "variance", "mean by K", "gate"], rows

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: KnnAgreement, limit: int = 5) -> list[dict[str, str]]:
        """The points whose neighbourhoods agree least: the text and its three nearest neighbours under each model."""
        eval_set = data["eval"]
        where = {point: i for i, point in enumerate(eval_set.ids)}
        near = [evidence.neighbours(m, eval_set, result.pooling, result.k, check="the examples") for m in (reference, candidate)]
        shown = lambda row: " / ".join(eval_set.texts[j][:80] for j in row[:3])  # noqa: E731
        return [{"id": p, "text": eval_set.texts[where[p]], f"neighbours under {reference.name}": shown(near[0][where[p]]),
                 f"neighbours under {candidate.name}": shown(near[1][where[p]])} for p in result.lowest_ids[:limit]]

    def failure(self, *, result: KnnAgreement, verdict: Verdict):
        head = f"{result.candidate} does not see the neighbourhoods {result.reference} sees in {result.dataset}"
        headers = ["metric", "threshold", "value", "variance", "n", "K", "pooling"]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result),
               f"{result.variance:.4f}", result.n, result.k, result.pooling]
        return Failure(head, headers, row, result.lowest_ids, "ids whose neighbourhoods agree least")
