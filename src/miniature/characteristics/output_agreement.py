"""Beyond the paper: do the two models' output distributions agree? Top-1 agreement and KL divergence.

Dutta et al., "Accuracy is Not All You Need" (NeurIPS 2024): at equal accuracy, compressed
models flip answers in both directions, and the KL divergence between the output
distributions tracks those flips. llama.cpp's ``perplexity --kl-divergence`` reports, for a
quantized model against its parent: the KL statistics (mean with its uncertainty, median,
percentiles, maximum), the share of positions with the same top token, and the RMS change of
the reference token's probability. Here the same figures gate a classifier or an extractive-QA
model, from the outputs already cached (no extra forward pass):

- ``top1_agreement`` (an agreement, gated by a minimum): the share of points where both
  models' top prediction is the same; extractive QA: the same final answer text.
- ``kl_divergence`` (a divergence, gated by a maximum): the mean over points of
  KL(p_ref || p_cand) of the softmax distributions, in nats; extractive QA: the mean over
  questions of the start and end distributions' KL on the first window, when the two models
  share a tokenizer.

Both carry the flips when labels exist: the share of points that go correct -> wrong (the
negative flip rate) and wrong -> correct, so that acc_cand = acc_ref - negative + positive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evidence import Evidence, Model, PositionStatistics
from ..maths import kl_from_logits, kl_statistics, rms_delta_p, softmax
from ..validation import check_fraction
from .base import Characteristic, Failure, Result, Verdict
from .bootstrap import RESAMPLES, bootstrap_intervals, weighted_mean
from .render import format_value, number, verdict_cell

if TYPE_CHECKING:
    from ..data import EvalSet

_IDS = 100  # ids kept for the failure message and the report


def flip_rates(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> tuple[float, float]:
    """(negative, positive): the shares of points that go correct -> wrong and wrong -> correct."""
    ref, cand = np.asarray(reference_correct, bool), np.asarray(candidate_correct, bool)
    return float(np.mean(ref & ~cand)), float(np.mean(~ref & cand))


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class _AgreementContext(Result):
    """What both output-agreement results carry beside their value: the task, and the flips when labels exist."""

    task: str | None = None
    #: How the task reads top-1 agreement or KL, where that is not the obvious reading (for the notes).
    basis: str | None = None
    accuracy_reference: float | None = None
    accuracy_candidate: float | None = None
    negative_flip_rate: float | None = None
    positive_flip_rate: float | None = None
    #: Causal LMs (characteristics/token_agreement.py): predicted positions, each model's perplexity, their ratio.
    tokens: int | None = None
    perplexity_reference: float | None = None
    perplexity_candidate: float | None = None
    perplexity_ratio: float | None = None


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class Top1Agreement(_AgreementContext):
    """Share of points where both models' top prediction agrees, with the flips when labels exist.

    ``disagreeing_ids``: the points whose top prediction differs, largest KL first.
    """

    metric = "top1_agreement"

    disagreeing_ids: list[str]


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class KlDivergence(_AgreementContext):
    """Mean KL(p_ref || p_cand) over points, in nats, with llama.cpp's statistics beside it.

    ``largest_ids``: the points of largest KL first; ``rms_delta_p``: the RMS change of the
    reference's top-class probability; ``top1_agreement`` and the flips, as context.
    """

    metric = "kl_divergence"

    median: float
    p90: float
    p95: float
    p99: float
    maximum: float
    rms_delta_p: float
    top1_agreement: float
    largest_ids: list[str]


def compare_outputs(
    ids: Sequence[str],
    reference_logits: np.ndarray,
    candidate_logits: np.ndarray,
    *,
    same_top: np.ndarray | None = None,
    reference_correct: np.ndarray | None = None,
    candidate_correct: np.ndarray | None = None,
    reference: str = "reference",
    candidate: str = "candidate",
    dataset: str = "",
    task: str | None = None,
    basis: Mapping[str, str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[Top1Agreement, KlDivergence]:
    """Top-1 agreement and KL divergence of two models' logits on the same points.

    ``reference_logits`` and ``candidate_logits`` are (n, classes) with the classes in one
    order, or (n, 2, positions) for QA's start and end distributions (each point's KL is then
    the mean of the two). ``same_top`` overrides the argmax comparison (QA: same answer text);
    ``*_correct`` give the flips; ``basis``: {"top1": ..., "kl": ...}, how the task reads each (notes).
    Intervals: a seeded bootstrap over points (``resamples=0``: none).
    """
    n = len(ids)
    if n == 0:
        raise ValueError("Expected at least one point but got none")
    if reference_logits.shape[0] != n or candidate_logits.shape[0] != n:
        raise ValueError(f"Expected logits for {n} points but got {reference_logits.shape[0]} and {candidate_logits.shape[0]}")
    kl = kl_from_logits(reference_logits, candidate_logits)
    if kl.ndim == 2:  # QA: the start and the end distribution
        kl = kl.mean(axis=1)
    if same_top is None:
        same_top = np.argmax(reference_logits, axis=-1) == np.argmax(candidate_logits, axis=-1)
    same_top = np.asarray(same_top, bool)
    intervals = (bootstrap_intervals([weighted_mean(same_top.astype(np.float64)), weighted_mean(kl)], n,
                                     resamples=resamples, seed=seed) if resamples else [None, None])
    by_kl = np.argsort(-kl, kind="stable")
    common = {"reference": reference, "candidate": candidate, "dataset": dataset, "n": n, "task": task}
    if reference_correct is not None and candidate_correct is not None:
        negative, positive = flip_rates(reference_correct, candidate_correct)
        common.update(accuracy_reference=float(np.mean(reference_correct)),
                      accuracy_candidate=float(np.mean(candidate_correct)),
                      negative_flip_rate=negative, positive_flip_rate=positive)
    basis = basis or {}
    top1 = Top1Agreement(value=float(same_top.mean()), interval=intervals[0], basis=basis.get("top1"),
                         disagreeing_ids=[ids[i] for i in by_kl if not same_top[i]], **common)
    stats = kl_statistics(kl)
    divergence = KlDivergence(
        value=stats.pop("mean"), interval=intervals[1], **stats,
        rms_delta_p=rms_delta_p(reference_logits, candidate_logits), top1_agreement=float(top1),
        largest_ids=[ids[i] for i in by_kl[:_IDS]], basis=basis.get("kl"), **common,
    )
    return top1, divergence


# -- the characteristics --------------------------------------------------------------------------


def top1_agreement(reference: Model, candidate: Model, eval_set: EvalSet, *, resamples: int = RESAMPLES,
                   record: bool = True) -> Top1Agreement:
    """Share of ``eval_set`` points where both models make the same top prediction (labels not needed)."""
    return TopOneAgreement().run("top1_agreement", reference, candidate, {"eval": eval_set}, resamples=resamples, record=record)


def assert_top1_agreement(reference: Model, candidate: Model, eval_set: EvalSet, *, min: float) -> Top1Agreement:
    """Fail unless the two models' top predictions agree on at least ``min`` of the points; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_top1_agreement")
    return TopOneAgreement().run("assert_top1_agreement", reference, candidate, {"eval": eval_set}, threshold=threshold)


def kl_divergence(reference: Model, candidate: Model, eval_set: EvalSet, *, resamples: int = RESAMPLES,
                  record: bool = True) -> KlDivergence:
    """Mean KL(p_ref || p_cand) over ``eval_set``, in nats, with median, p90, p95, p99, maximum and RMS Δp."""
    return OutputDivergence().run("kl_divergence", reference, candidate, {"eval": eval_set}, resamples=resamples, record=record)


def assert_kl_divergence(reference: Model, candidate: Model, eval_set: EvalSet, *, max: float) -> KlDivergence:
    """Fail when the mean KL divergence of the candidate's outputs from the reference's exceeds ``max`` nats."""
    __tracebackhide__ = True
    characteristic = OutputDivergence()
    threshold = characteristic.check_bound(max, name="max", owner="assert_kl_divergence")
    return characteristic.run("assert_kl_divergence", reference, candidate, {"eval": eval_set}, threshold=threshold)


def _compare(evidence: Evidence, reference: Model, candidate: Model, eval_set: EvalSet,
             resamples: int) -> tuple[Top1Agreement, KlDivergence]:
    found = evidence.distributions(reference, candidate, eval_set, check="the output-agreement check")
    if isinstance(found, PositionStatistics):
        return _compare_positions(found, reference, candidate, eval_set, resamples)
    return compare_outputs(eval_set.ids, found.reference, found.candidate, same_top=found.same_top,
                           reference_correct=found.reference_correct, candidate_correct=found.candidate_correct,
                           reference=reference.name, candidate=candidate.name, dataset=eval_set.name, task=found.task,
                           basis=found.basis, resamples=resamples)


def _compare_positions(stats: PositionStatistics, reference: Model, candidate: Model, eval_set: EvalSet,
                       resamples: int) -> tuple[Top1Agreement, KlDivergence]:
    """Causal LMs: every predicted position of every text, the two models read side by side (no logits kept)."""
    from .token_agreement import compare_positions

    figures = compare_positions(eval_set.ids, stats.token_counts, stats.kl, stats.same_top, stats.reference_logprob,
                                stats.candidate_logprob, resamples=resamples)
    common = {"reference": reference.name, "candidate": candidate.name, "dataset": eval_set.name, "n": figures.n,
              "task": stats.task, "tokens": figures.tokens, "perplexity_reference": figures.perplexity_reference,
              "perplexity_candidate": figures.perplexity_candidate,
              "perplexity_ratio": figures.perplexity_candidate / figures.perplexity_reference}
    kl = dict(figures.kl)
    return (Top1Agreement(value=figures.agreement, interval=figures.agreement_interval,
                          disagreeing_ids=figures.disagreeing_ids, **common),
            KlDivergence(value=kl.pop("mean"), interval=figures.kl_interval, **kl, rms_delta_p=figures.rms_delta_p,
                         top1_agreement=figures.agreement, largest_ids=figures.largest_ids, **common))


def _flips(r: Mapping[str, Any]) -> list[str]:
    if r.get("negative_flip_rate") is None:
        return ["-", "-", "-", "-"]
    return [number(r["accuracy_reference"]), number(r["accuracy_candidate"]), number(r["negative_flip_rate"]),
            number(r["positive_flip_rate"])]


_FLIP_HEADERS = ["acc ref", "acc cand", "flip right->wrong", "flip wrong->right"]


class _OutputAgreement(Characteristic):
    needs = {"eval": "eval set"}

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> Result:
        # Both characteristics come from one comparison: computed once per pair and resampling.
        key = ("output agreement", reference.key, candidate.key, data["eval"].content_key, resamples)
        both = evidence.memo(key, lambda: _compare(evidence, reference, candidate, data["eval"], resamples))
        return both[0] if self.higher_is_better else both[1]

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: Result, limit: int = 5) -> list[dict[str, str]]:
        """The points that moved most (largest KL first): the point, the gold answer, and each model's top
        prediction (with its probability where the task's outputs are one distribution over named classes)."""
        eval_set = data["eval"]
        ids = result.disagreeing_ids if isinstance(result, Top1Agreement) else result.largest_ids
        where = {point: i for i, point in enumerate(eval_set.ids)}
        found = evidence.distributions(reference, candidate, eval_set, check="the examples")
        if isinstance(found, PositionStatistics):
            return _position_examples(found, eval_set, [where[p] for p in ids[:limit]])
        decided = [evidence.decisions(m, eval_set, check="the examples", gold=False) for m in (reference, candidate)]
        rows = []
        for point in ids[:limit]:
            i = where[point]
            row = {"id": point, **evidence.point(eval_set, i)}
            if decided[0].gold is not None:
                row["gold"] = decided[0].gold[i]
            for model, decisions, logits in ((reference, decided[0], found.reference), (candidate, decided[1], found.candidate)):
                row[model.name] = decisions.shown(i)
                if logits.ndim == 2:  # one distribution over classes: the top one, with its probability
                    p = softmax(logits[i])
                    top = int(np.argmax(p))
                    row[model.name] = f"{found.classes[top] if found.classes else top} ({p[top]:.2f})"
            rows.append(row)
        return rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        causal = [r for r in results if r.get("tokens") is not None]
        if causal and self.higher_is_better:
            return [f"{self.name} on causal LMs: the share of every text's predicted token positions where both models' "
                    f"most likely next token is the same (token-weighted; CI: bootstrap over texts)"]
        if causal:
            return [f"{self.name} on causal LMs: over the {r['tokens']} predicted tokens of {r['dataset']}, "
                    f"token-weighted; perplexity {r['reference']} {r['perplexity_reference']:.3f}, {r['candidate']} "
                    f"{r['perplexity_candidate']:.3f} (ratio {r['perplexity_ratio']:.4f})" for r in causal]
        return [f"{self.name} on {basis}" for basis in dict.fromkeys(r["basis"] for r in results if r.get("basis"))]


class TopOneAgreement(_OutputAgreement):
    """Do the two models make the same top prediction? (Beyond the paper: Dutta et al. 2024.)"""

    name = "top1_agreement"
    title = "output agreement, top-1 (beyond the paper: Dutta et al. 2024):"
    summary = "share of eval points where both models' top prediction agrees (QA: the same answer); no labels needed"
    result_type = Top1Agreement

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[r["reference"], r["candidate"], r["dataset"], r["n"], format_value(r), *_flips(r), verdict_cell(r)]
                for r in results]
        return ["reference", "candidate", "eval", "n", "top-1 agreement [95% CI]", *_FLIP_HEADERS, "gate"], rows

    def failure(self, *, result: Top1Agreement, verdict: Verdict):
        head = (f"{result.candidate} changes {result.reference}'s top prediction on "
                f"{len(result.disagreeing_ids)} of {result.n} points of {result.dataset}")
        if result.tokens is not None:  # read token by token (causal LMs)
            head = (f"{result.candidate} changes {result.reference}'s most likely next token at "
                    f"{1 - float(result):.1%} of the {result.tokens} positions of {result.dataset} (in "
                    f"{len(result.disagreeing_ids)} of its {result.n} texts)")
        headers = ["metric", "threshold", "value", "n", *_FLIP_HEADERS]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n, *_flips(result.as_dict())]
        what = "texts" if result.tokens is not None else "ids"
        return Failure(head, headers, row, result.disagreeing_ids, f"{what} whose top prediction changed, largest KL first")


class OutputDivergence(_OutputAgreement):
    """How far does the candidate's output distribution drift from the reference's? KL(p_ref || p_cand), in nats."""

    name = "kl_divergence"
    title = "output agreement, KL(p_ref || p_cand) in nats (beyond the paper: Dutta et al. 2024, llama.cpp):"
    summary = "mean KL divergence of the candidate's output distribution from the reference's, in nats (a maximum)"
    higher_is_better = False
    bound_key = "max"
    bound_range = (0.0, math.inf)  # a divergence is never negative: a maximum below 0 could never pass
    result_type = KlDivergence

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[r["reference"], r["candidate"], r["dataset"], r["n"], format_value(r, ".5f", ".5f"),
                 *(number(r[k], ".5f") for k in ("median", "p90", "p95", "p99", "maximum")),
                 number(r["rms_delta_p"]), number(r["top1_agreement"]), *_flips(r),
                 verdict_cell(r, words=("max", "upper bound"))] for r in results]
        headers = ["reference", "candidate", "eval", "n", "mean KL [95% CI]", "median", "p90", "p95", "p99", "max",
                   "RMS Δp", "top-1", *_FLIP_HEADERS, "gate"]
        return headers, rows

    def failure(self, *, result: KlDivergence, verdict: Verdict):
        head = f"{result.candidate}'s output distribution drifts from {result.reference}'s on {result.dataset}"
        headers = ["metric", "threshold", "mean KL", "median", "p99", "max", "RMS Δp", "top-1", "n"]
        row = [result.metric, f"<= {verdict.threshold:g}", format_value(result, ".5f", ".5f"), number(result.median, ".5f"),
               number(result.p99, ".5f"), number(result.maximum, ".5f"), number(result.rms_delta_p),
               number(result.top1_agreement), result.n]
        return Failure(head, headers, row, result.largest_ids, "ids of largest KL first")


def _position_examples(stats: PositionStatistics, eval_set: EvalSet, rows: list[int]) -> list[dict[str, str]]:
    """The texts whose next-token distributions moved most: each text's mean KL and top-1 agreement over its tokens."""
    kl, same, counts = stats.per_text(stats.kl), stats.per_text(stats.same_top), stats.token_counts
    return [{"id": eval_set.ids[i], "text": eval_set.texts[i], "tokens": str(int(counts[i])),
             "mean KL": f"{kl[i] / counts[i]:.5f}", "top-1": f"{same[i] / counts[i]:.3f}"} for i in rows]
