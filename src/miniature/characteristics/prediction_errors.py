"""Characteristic 1 of the paper (section 3): do two models get the same points wrong?

The maths are pure functions over id sets and arrays; :class:`PredictionErrors` declares the
characteristic (data, threshold, rendering) and asks the session's engine for outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..validation import check_fraction
from .base import Characteristic, Result, Verdict, format_value, verdict_cell
from .bootstrap import RESAMPLES, bootstrap_interval, weighted_jaccard

if TYPE_CHECKING:
    from ..data import EvalSet
    from ..session import Model


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


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class ErrorJaccard(Result):
    """Error-set Jaccard of a (reference, candidate) pair, with the figures beside it.

    ``errors_reference`` is |E_ref|, ``errors_both`` |E_ref ∩ E_cand|, ``reference_subset``
    whether E_ref ⊆ E_cand; ``differing_ids`` are the ids in exactly one error set, the largest
    change in gold-class probability first. Extractive QA adds each model's EM and F1.
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

    def measure(self, *, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> ErrorJaccard:
        eval_set = data["eval"]
        engine = reference.session.engine
        check = "the prediction-error check"
        if eval_set.is_qa:
            return _qa_error_jaccard(engine, reference, candidate, eval_set, resamples=resamples)
        per_model = {}
        for model in (reference, candidate):
            if engine.settings.task == "causal-lm":  # a causal LM picks the likeliest of each row's choices
                from ..tasks.causal_lm import choices_picked

                per_model[model] = choices_picked(engine, model, eval_set, check)
                continue
            from ..tasks.classification import gold

            outputs = engine.outputs(model, eval_set)
            labels = gold(engine, model, eval_set, check)
            per_model[model] = (outputs.predictions, labels, outputs.probabilities()[np.arange(len(labels)), labels])
        (ref_pred, ref_gold, ref_p), (cand_pred, cand_gold, cand_p) = per_model[reference], per_model[candidate]
        return compare_errors(
            eval_set.ids, reference_predictions=ref_pred, reference_gold=ref_gold, candidate_predictions=cand_pred,
            candidate_gold=cand_gold, reference_gold_probability=ref_p, candidate_gold_probability=cand_p,
            reference=reference.name, candidate=candidate.name, dataset=eval_set.name, resamples=resamples,
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
            for r in results if r.get("task") == "question-answering"
        ]

    def examples(self, *, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None], result: ErrorJaccard,
                 limit: int = 5) -> list[dict[str, str]]:
        """The points wrong for exactly one model, largest change in gold-class probability first: the text, the
        gold label (or answers) and both models' predictions."""
        eval_set, engine = data["eval"], reference.session.engine
        where = {point: i for i, point in enumerate(eval_set.ids)}
        if eval_set.is_qa:
            from ..tasks.question_answering import answers

            said = [answers(engine, m, eval_set, "the examples") for m in (reference, candidate)]
            return [{"id": p, "question": eval_set.questions[where[p]], "gold": " | ".join(eval_set.answers[where[p]]) or
                     "(no answer)", reference.name: said[0][where[p]] or "(no answer)",
                     candidate.name: said[1][where[p]] or "(no answer)"} for p in result.differing_ids[:limit]]
        if eval_set.is_multiple_choice and engine.settings.task == "causal-lm":
            from ..tasks.causal_lm import choices_picked

            picked = [choices_picked(engine, m, eval_set, "the examples")[0] for m in (reference, candidate)]
            return [{"id": p, "text": eval_set.texts[where[p]], "gold": eval_set.choices[where[p]][eval_set.labels[where[p]]],
                     reference.name: eval_set.choices[where[p]][picked[0][where[p]]],
                     candidate.name: eval_set.choices[where[p]][picked[1][where[p]]]} for p in result.differing_ids[:limit]]
        names = [engine.backend(m).id2label or {} for m in (reference, candidate)]
        predicted = [engine.outputs(m, eval_set).predictions for m in (reference, candidate)]
        rows = []
        for point in result.differing_ids[:limit]:
            i = where[point]
            rows.append({"id": point, "text": eval_set.texts[i], "gold": str(eval_set.labels[i]),
                         reference.name: str(names[0].get(int(predicted[0][i]), int(predicted[0][i]))),
                         candidate.name: str(names[1].get(int(predicted[1][i]), int(predicted[1][i])))})
        return rows

    def failure(self, *, result: ErrorJaccard, verdict: Verdict):
        head = f"{result.candidate} does not make the errors {result.reference} makes on {result.dataset}"
        headers = ["metric", "threshold", "value", "n", "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "neg. flip"]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n,
               result.errors_reference, result.errors_candidate, result.errors_both, f"{result.negative_flip_rate:.4f}"]
        return head, headers, row, result.differing_ids, \
            "ids wrong for exactly one model, largest change in gold-class probability first"


def _qa_error_jaccard(engine: Any, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      resamples: int) -> ErrorJaccard:
    """Extractive QA: a point is an error when its answer exactly matches no gold answer (SQuAD 2.0 rules;
    answering an unanswerable question is an error). Also reports each model's EM and F1."""
    from ..tasks.question_answering import answers, correct
    from .squad import f1_score

    check = "the prediction-error check"
    golds = eval_set.require_answers(check)
    scores = {}
    for model in (reference, candidate):
        predicted = answers(engine, model, eval_set, check)
        scores[model] = (correct(predicted, golds).astype(np.int64),
                         float(np.mean([f1_score(a, g) for a, g in zip(predicted, golds)])))
    (ref_correct, ref_f1), (cand_correct, cand_f1) = scores[reference], scores[candidate]
    always = np.ones(len(eval_set), dtype=np.int64)  # "correct" is the gold of the correct-or-not prediction
    result = compare_errors(
        eval_set.ids, reference_predictions=ref_correct, reference_gold=always, candidate_predictions=cand_correct,
        candidate_gold=always, reference=reference.name, candidate=candidate.name, dataset=eval_set.name,
        resamples=resamples,
    )
    return dataclasses.replace(
        result, task="question-answering", exact_match_reference=float(ref_correct.mean()),
        exact_match_candidate=float(cand_correct.mean()), f1_reference=ref_f1, f1_candidate=cand_f1,
        null_threshold=engine.settings.null_threshold,
    )
