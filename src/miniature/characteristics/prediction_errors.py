"""Characteristic 1 of the paper (section 3): do two models get the same points wrong?

The maths are pure functions over id sets and arrays; :class:`PredictionErrors` declares the
characteristic (data, threshold, rendering) and asks the evidence for each model's decisions (what a
decision and an error are is the data set's task's: a class, an answer, a choice).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evidence import Evidence, Model
from ..maths import jaccard
from ..validation import check_fraction
from .base import Characteristic, Failure, Result, Verdict
from .bootstrap import RESAMPLES, bootstrap_interval, weighted_jaccard
from .render import format_value, verdict_cell

if TYPE_CHECKING:
    from ..data import EvalSet


def error_set(ids: Sequence[str], predictions: np.ndarray, gold: np.ndarray) -> frozenset[str]:
    """E = the ids of the points whose prediction differs from the gold label."""
    predictions, gold = np.asarray(predictions), np.asarray(gold)
    if not len(ids) == len(predictions) == len(gold):
        raise ValueError(
            f"Expected ids, predictions and gold of one length but got {len(ids)}, {len(predictions)}, {len(gold)}"
        )
    return frozenset(np.asarray(ids, dtype=object)[predictions != gold].tolist())


def negative_flip_rate(reference_errors: Iterable[str], candidate_errors: Iterable[str], n: int) -> float:
    r"""Share of all ``n`` points the reference gets right and the candidate gets wrong.

    .. math:: \mathrm{NFR} = \frac{|E_{cand} \setminus E_{ref}|}{n}
    """
    if n <= 0:
        raise ValueError(f"Expected n >= 1 points but got n={n}")
    return len(set(candidate_errors) - set(reference_errors)) / n


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class ErrorJaccard(Result):
    """Error-set Jaccard of a (reference, candidate) pair, with the figures beside it.

    ``errors_reference`` is |E_ref|, ``errors_both`` |E_ref ∩ E_cand|, ``reference_subset``
    whether E_ref ⊆ E_cand; ``differing_ids`` are the ids in exactly one error set, the largest
    change in gold-class probability first. Extractive QA adds each model's EM and F1 (the scores its
    task reports beside accuracy) and the no-answer threshold that decided the answers.
    """

    metric = "error_jaccard"

    accuracy_reference: float
    accuracy_candidate: float
    errors_reference: int
    errors_candidate: int
    errors_both: int
    reference_subset: bool
    negative_flip_rate: float
    both_empty: bool
    differing_ids: list[str]
    task: str | None = None
    exact_match_reference: float | None = None
    exact_match_candidate: float | None = None
    f1_reference: float | None = None
    f1_candidate: float | None = None
    null_threshold: float | None = None


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
        value=jaccard(e_ref, e_cand),
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


# -- the characteristic ---------------------------------------------------------------------------


def error_jaccard(
    reference: Model, candidate: Model, eval_set: EvalSet, *, resamples: int = RESAMPLES, record: bool = True
) -> ErrorJaccard:
    """Jaccard of the sets of ``eval_set`` points each model gets wrong (paper, section 3).

    Returns an :class:`ErrorJaccard` (compares and formats as its value) that also carries both
    accuracies, the set sizes, the subset test and the negative-flip rate. ``resamples`` sets
    the bootstrap of its 95% interval (0: none); ``record=False`` keeps it out of the session's
    results (and so out of the summary). The other checks take both too.
    """
    return PredictionErrors().run("error_jaccard", reference, candidate, {"eval": eval_set}, resamples=resamples,
                                  record=record)


def assert_error_jaccard(reference: Model, candidate: Model, eval_set: EvalSet, *, min: float) -> ErrorJaccard:
    """Fail unless the error-set Jaccard of the pair is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_error_jaccard")
    return PredictionErrors().run("assert_error_jaccard", reference, candidate, {"eval": eval_set}, threshold=threshold)


class PredictionErrors(Characteristic):
    """Do two models get the same points wrong? Jaccard of their error sets."""

    name = "error_jaccard"
    title = "prediction errors (paper section 3):"
    summary = "Jaccard of the sets of eval points each model gets wrong (needs labels, gold answers or gold choices)"
    needs = {"eval": "eval set"}
    result_type = ErrorJaccard

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> ErrorJaccard:
        eval_set = data["eval"]
        ref, cand = (evidence.decisions(m, eval_set, check="the prediction-error check") for m in (reference, candidate))
        right = np.ones(len(eval_set), dtype=np.int64)  # each decision's correctness is compared with "correct"
        result = compare_errors(
            eval_set.ids, reference_predictions=ref.correct.astype(np.int64), reference_gold=right,
            candidate_predictions=cand.correct.astype(np.int64), candidate_gold=right,
            reference_gold_probability=ref.gold_probability, candidate_gold_probability=cand.gold_probability,
            reference=reference.name, candidate=candidate.name, dataset=eval_set.name, resamples=resamples,
        )
        if not ref.scores:
            return result
        return dataclasses.replace(  # the task's own figures beside accuracy (extractive QA: EM and F1)
            result, task=ref.task, exact_match_reference=ref.scores.get("exact_match"),
            exact_match_candidate=cand.scores.get("exact_match"), f1_reference=ref.scores.get("f1"),
            f1_candidate=cand.scores.get("f1"), null_threshold=ref.settings.get("null_threshold"),
        )

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[
            r["reference"], r["candidate"], r["dataset"], r["n"], format_value(r), f"{r['accuracy_reference']:.4f}",
            f"{r['accuracy_candidate']:.4f}", r["errors_reference"], r["errors_candidate"], r["errors_both"],
            "yes" if r["reference_subset"] else "no", f"{r['negative_flip_rate']:.4f}", verdict_cell(r),
        ] for r in results]
        headers = ["reference", "candidate", "eval", "n", "error Jaccard [95% CI]", "acc ref", "acc cand",
                   "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "E_ref⊆E_cand", "neg. flip", "gate"]
        return headers, rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        return [
            f"extractive QA (SQuAD 2.0 rules): reference {r['reference']} EM {r['exact_match_reference']:.4f}, "
            f"F1 {r['f1_reference']:.4f}; {r['candidate']} EM {r['exact_match_candidate']:.4f}, "
            f"F1 {r['f1_candidate']:.4f} (on {r['dataset']}; an error is an answer matching no gold answer; "
            f"no-answer threshold {r['null_threshold']:g})"
            for r in results if r.get("f1_reference") is not None
        ]

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: ErrorJaccard, limit: int = 5) -> list[dict[str, str]]:
        """The points wrong for exactly one model, largest change in gold-class probability first: the point (its
        text or question), the gold answer and both models' decisions."""
        eval_set = data["eval"]
        where = {point: i for i, point in enumerate(eval_set.ids)}
        decided = [evidence.decisions(m, eval_set, check="the examples") for m in (reference, candidate)]
        return [{"id": p, **evidence.point(eval_set, where[p]), "gold": decided[0].gold[where[p]],
                 reference.name: decided[0].shown(where[p]), candidate.name: decided[1].shown(where[p])}
                for p in result.differing_ids[:limit]]

    def failure(self, *, result: ErrorJaccard, verdict: Verdict):
        head = f"{result.candidate} does not make the errors {result.reference} makes on {result.dataset}"
        headers = ["metric", "threshold", "value", "n", "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "neg. flip"]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n,
               result.errors_reference, result.errors_candidate, result.errors_both, f"{result.negative_flip_rate:.4f}"]
        return Failure(head, headers, row, result.differing_ids,
                       "ids wrong for exactly one model, largest change in gold-class probability first")

