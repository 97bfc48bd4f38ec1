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

from ..errors import NotApplicable
from ..validation import check_fraction
from .base import Characteristic, Result, Verdict, format_value, number, verdict_cell
from .bootstrap import RESAMPLES, bootstrap_intervals, weighted_mean

if TYPE_CHECKING:
    from ..data import EvalSet
    from ..session import Model

_IDS = 100  # ids kept for the failure message and the report


def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise log-softmax in float64, stable; NaN entries (padding) are left out of the distribution.

    .. math:: \log p_i = z_i - \max_j z_j - \log \sum_j e^{z_j - \max_j z_j}
    """
    z = np.asarray(logits, dtype=np.float64)
    z = np.where(np.isnan(z), -np.inf, z)
    top = np.max(z, axis=-1, keepdims=True)
    shifted = z - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def kl_divergences(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    r"""Per row, KL(p_ref || p_cand) in nats of the softmax distributions of two logit arrays.

    .. math:: \mathrm{KL}(p \,\|\, q) = \sum_i p_i (\log p_i - \log q_i)

    Rows may be padded with NaN (left out of both distributions); terms with p_i = 0 are 0.
    Rounding can leave a result a hair below 0; it is clipped to 0, as KL never is.

    >>> float(kl_divergences(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))[0])
    0.0
    """
    if reference_logits.shape != candidate_logits.shape:
        raise ValueError(f"Expected logits of one shape but got {reference_logits.shape} and {candidate_logits.shape}")
    log_p, log_q = log_softmax(reference_logits), log_softmax(candidate_logits)
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):  # padding: -inf - -inf, masked out just below
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return np.maximum(terms.sum(axis=-1), 0.0)


def kl_statistics(kl: np.ndarray) -> dict[str, float]:
    """llama.cpp's summary of per-position KL: mean, median, p90, p95, p99 and maximum."""
    kl = np.asarray(kl, dtype=np.float64)
    p90, p95, p99 = np.percentile(kl, [90, 95, 99])
    return {"mean": float(kl.mean()), "median": float(np.median(kl)), "p90": float(p90), "p95": float(p95),
            "p99": float(p99), "maximum": float(kl.max())}


def rms_delta_p(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    r"""Root mean square change of the probability of the reference's top class (llama.cpp's "RMS Δp").

    .. math:: \sqrt{\tfrac{1}{n} \sum_d \big(q_d(c_d) - p_d(c_d)\big)^2}, \quad c_d = \arg\max_i p_d(i)
    """
    log_p, log_q = log_softmax(reference_logits), log_softmax(candidate_logits)
    top = np.argmax(log_p, axis=-1)[..., None]
    delta = np.exp(np.take_along_axis(log_q, top, -1)) - np.exp(np.take_along_axis(log_p, top, -1))
    return float(np.sqrt(np.mean(delta ** 2)))


def flip_rates(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> tuple[float, float]:
    """(negative, positive): the shares of points that go correct -> wrong and wrong -> correct."""
    ref, cand = np.asarray(reference_correct, bool), np.asarray(candidate_correct, bool)
    return float(np.mean(ref & ~cand)), float(np.mean(~ref & cand))


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class _AgreementContext(Result):
    """What both output-agreement results carry beside their value: the task, and the flips when labels exist."""

    task: str = "text-classification"
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
    task: str = "text-classification",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[Top1Agreement, KlDivergence]:
    """Top-1 agreement and KL divergence of two models' logits on the same points.

    ``reference_logits`` and ``candidate_logits`` are (n, classes) with the classes in one
    order, or (n, 2, positions) for QA's start and end distributions (each point's KL is then
    the mean of the two). ``same_top`` overrides the argmax comparison (QA: same answer text);
    ``*_correct`` give the flips. Intervals: a seeded bootstrap over points (``resamples=0``: none).
    """
    n = len(ids)
    if n == 0:
        raise ValueError("Expected at least one point but got none")
    if reference_logits.shape[0] != n or candidate_logits.shape[0] != n:
        raise ValueError(f"Expected logits for {n} points but got {reference_logits.shape[0]} and {candidate_logits.shape[0]}")
    kl = kl_divergences(reference_logits, candidate_logits)
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
    top1 = Top1Agreement(value=float(same_top.mean()), interval=intervals[0],
                         disagreeing_ids=[ids[i] for i in by_kl if not same_top[i]], **common)
    stats = kl_statistics(kl)
    divergence = KlDivergence(
        value=stats.pop("mean"), interval=intervals[1], **stats,
        rms_delta_p=rms_delta_p(reference_logits, candidate_logits), top1_agreement=float(top1),
        largest_ids=[ids[i] for i in by_kl[:_IDS]], **common,
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


def _compare(reference: Model, candidate: Model, eval_set: EvalSet, resamples: int) -> tuple[Top1Agreement, KlDivergence]:
    engine = reference.session.engine
    if engine.settings.task == "causal-lm":
        return _compare_causal(engine, reference, candidate, eval_set, resamples)
    if eval_set.is_qa:
        return _compare_qa(engine, reference, candidate, eval_set, resamples)
    ref_logits, cand_logits = _aligned_logits(engine, reference, candidate, eval_set)
    correct = [None, None]
    if eval_set.labels is not None:
        from ..tasks.classification import gold

        correct = [engine.outputs(m, eval_set).predictions == gold(engine, m, eval_set, "the output-agreement check")
                   for m in (reference, candidate)]
    return compare_outputs(eval_set.ids, ref_logits, cand_logits, reference_correct=correct[0],
                           candidate_correct=correct[1], reference=reference.name, candidate=candidate.name,
                           dataset=eval_set.name, resamples=resamples)


def _aligned_logits(engine: Any, reference: Model, candidate: Model, eval_set: EvalSet) -> tuple[np.ndarray, np.ndarray]:
    """Both models' logits with the candidate's classes in the reference's order (by their id2label names)."""
    from ..tasks.classification import logits

    ref, cand = (logits(engine, m, eval_set, "the output-agreement check") for m in (reference, candidate))
    if ref.shape[1] != cand.shape[1]:
        raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} predict {ref.shape[1]} and "
                            f"{cand.shape[1]} classes, so their output distributions cannot be compared")
    names = [engine.backend(m).id2label for m in (reference, candidate)]
    if all(names):
        ref_names, cand_names = (tuple(n[i] for i in range(len(n))) for n in names)
        if set(ref_names) != set(cand_names):
            raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} name their classes differently "
                                f"({', '.join(ref_names)} against {', '.join(cand_names)}), so their output "
                                f"distributions cannot be compared")
        cand = cand[:, [cand_names.index(name) for name in ref_names]]
    return ref, cand


def _compare_causal(engine: Any, reference: Model, candidate: Model, eval_set: EvalSet,
                    resamples: int) -> tuple[Top1Agreement, KlDivergence]:
    """Causal LMs: every predicted position of every text, the two models read side by side (no logits kept)."""
    from ..tasks.causal_lm_pairs import position_statistics
    from .token_agreement import compare_positions

    stats = position_statistics(engine, reference, candidate, eval_set)
    figures = compare_positions(eval_set.ids, stats.token_counts, stats.kl, stats.same_top, stats.reference_logprob,
                                stats.candidate_logprob, resamples=resamples)
    common = {"reference": reference.name, "candidate": candidate.name, "dataset": eval_set.name, "n": figures.n,
              "task": "causal-lm", "tokens": figures.tokens, "perplexity_reference": figures.perplexity_reference,
              "perplexity_candidate": figures.perplexity_candidate,
              "perplexity_ratio": figures.perplexity_candidate / figures.perplexity_reference}
    kl = dict(figures.kl)
    return (Top1Agreement(value=figures.agreement, interval=figures.agreement_interval,
                          disagreeing_ids=figures.disagreeing_ids, **common),
            KlDivergence(value=kl.pop("mean"), interval=figures.kl_interval, **kl, rms_delta_p=figures.rms_delta_p,
                         top1_agreement=figures.agreement, largest_ids=figures.largest_ids, **common))


def _compare_qa(engine: Any, reference: Model, candidate: Model, eval_set: EvalSet,
                resamples: int) -> tuple[Top1Agreement, KlDivergence]:
    """Extractive QA: the same final answer text, and the first window's start and end distributions."""
    from ..models.fingerprint import fingerprint
    from ..tasks.question_answering import answers, correct

    check = "the output-agreement check"
    predicted = [answers(engine, m, eval_set, check) for m in (reference, candidate)]
    vocabularies = [engine.backend(m).tokenizer_files() for m in (reference, candidate)]
    if not all(vocabularies) or fingerprint(vocabularies[0]) != fingerprint(vocabularies[1]):
        raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} do not share a tokenizer (their "
                            f"vocabulary files differ or are missing), so their span distributions over tokens "
                            f"cannot be compared")
    outputs = [engine.outputs(m, eval_set) for m in (reference, candidate)]
    span = [np.stack([o.start_logits, o.end_logits], axis=1) for o in outputs]
    if span[0].shape != span[1].shape or not np.array_equal(np.isnan(span[0]), np.isnan(span[1])):
        raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} cut the questions into different "
                            f"windows, so their span distributions cannot be compared")
    right = [None, None]
    if eval_set.answers is not None:
        right = [correct(p, eval_set.answers) for p in predicted]
    same = np.array([a == b for a, b in zip(*predicted)], bool)
    return compare_outputs(eval_set.ids, span[0], span[1], same_top=same, reference_correct=right[0],
                           candidate_correct=right[1], reference=reference.name, candidate=candidate.name,
                           dataset=eval_set.name, task="question-answering", resamples=resamples)


def _flips(r: Mapping[str, Any]) -> list[str]:
    if r.get("negative_flip_rate") is None:
        return ["-", "-", "-", "-"]
    return [number(r["accuracy_reference"]), number(r["accuracy_candidate"]), number(r["negative_flip_rate"]),
            number(r["positive_flip_rate"])]


_FLIP_HEADERS = ["acc ref", "acc cand", "flip right->wrong", "flip wrong->right"]


class _OutputAgreement(Characteristic):
    needs = {"eval": "eval set"}

    def measure(self, *, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> Result:
        # Both characteristics come from one comparison: computed once per pair and resampling.
        key = ("output agreement", reference.spec.text, candidate.spec.text, data["eval"].content_key, resamples,
               reference.session.settings.null_threshold)
        both = reference.session.engine.memo(key, lambda: _compare(reference, candidate, data["eval"], resamples))
        return both[0] if self.higher_is_better else both[1]

    def examples(self, *, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None], result: Result,
                 limit: int = 5) -> list[dict[str, str]]:
        """The points that moved most (largest KL first): the text, the gold label, and each model's top
        prediction with its probability (extractive QA: the question and both answers)."""
        eval_set, engine = data["eval"], reference.session.engine
        ids = result.disagreeing_ids if isinstance(result, Top1Agreement) else result.largest_ids
        where = {point: i for i, point in enumerate(eval_set.ids)}
        if result.task == "causal-lm":
            return _causal_examples(engine, reference, candidate, eval_set, [where[p] for p in ids[:limit]])
        if eval_set.is_qa:
            from ..tasks.question_answering import answers

            said = [answers(engine, m, eval_set, "the examples") for m in (reference, candidate)]
            return [{"id": p, "question": eval_set.questions[where[p]], reference.name: said[0][where[p]] or "(no answer)",
                     candidate.name: said[1][where[p]] or "(no answer)"} for p in ids[:limit]]
        ref_logits, cand_logits = _aligned_logits(engine, reference, candidate, eval_set)
        names = engine.backend(reference).id2label or {}
        rows = []
        for point in ids[:limit]:
            i = where[point]
            row = {"id": point, "text": eval_set.texts[i]}
            if eval_set.labels is not None:
                row["gold"] = str(eval_set.labels[i])
            for model, logits in ((reference, ref_logits), (candidate, cand_logits)):
                p = np.exp(log_softmax(logits[i]))
                top = int(np.argmax(p))
                row[model.name] = f"{names.get(top, top)} ({p[top]:.2f})"
            rows.append(row)
        return rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        causal = [r for r in results if r.get("task") == "causal-lm"]
        if causal and self.higher_is_better:
            return [f"{self.name} on causal LMs: the share of every text's predicted token positions where both models' "
                    f"most likely next token is the same (token-weighted; CI: bootstrap over texts)"]
        if causal:
            return [f"{self.name} on causal LMs: over the {r['tokens']} predicted tokens of {r['dataset']}, "
                    f"token-weighted; perplexity {r['reference']} {r['perplexity_reference']:.3f}, {r['candidate']} "
                    f"{r['perplexity_candidate']:.3f} (ratio {r['perplexity_ratio']:.4f})" for r in causal]
        if any(r.get("task") == "question-answering" for r in results):
            return [f"{self.name} on extractive QA: " + ("top-1 = the same final answer text" if self.higher_is_better
                    else "KL of the start and end distributions on each question's first window, averaged")]
        return []


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
        if result.task == "causal-lm":
            head = (f"{result.candidate} changes {result.reference}'s most likely next token at "
                    f"{1 - float(result):.1%} of the {result.tokens} positions of {result.dataset} (in "
                    f"{len(result.disagreeing_ids)} of its {result.n} texts)")
        headers = ["metric", "threshold", "value", "n", *_FLIP_HEADERS]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n, *_flips(result.as_dict())]
        what = "texts" if result.task == "causal-lm" else "ids"
        return head, headers, row, result.disagreeing_ids, f"{what} whose top prediction changed, largest KL first"


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
        return head, headers, row, result.largest_ids, "ids of largest KL first"


def _causal_examples(engine: Any, reference: Model, candidate: Model, eval_set: EvalSet,
                     rows: list[int]) -> list[dict[str, str]]:
    """The texts whose next-token distributions moved most: each text's mean KL and top-1 agreement over its tokens."""
    from ..tasks.causal_lm_pairs import position_statistics

    stats = position_statistics(engine, reference, candidate, eval_set)
    kl, same, counts = stats.per_text(stats.kl), stats.per_text(stats.same_top), stats.token_counts
    return [{"id": eval_set.ids[i], "text": eval_set.texts[i], "tokens": str(int(counts[i])),
             "mean KL": f"{kl[i] / counts[i]:.5f}", "top-1": f"{same[i] / counts[i]:.3f}"} for i in rows]
