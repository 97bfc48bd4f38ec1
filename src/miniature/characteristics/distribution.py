"""Characteristic 3 of the paper (section 5): do two models flag the same points as out-of-distribution?

Each model is an OOD detector by Deep Nearest Neighbors (Sun et al., ICML 2022): with
L2-normalised features z, a point's score is the distance to its k-th nearest neighbour in
an in-distribution training bank; the threshold keeps ``tpr`` (95%) of in-distribution
validation points; O_i are the challenge points scoring above it. The agreement of two
models is Jaccard(O_ref, O_cand).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UsageError
from ..evidence import Evidence, Model
from ..maths import jaccard
from ..validation import check_fraction, check_positive_int
from .base import POSITIVE_INT, Characteristic, Failure, Param, Result, Verdict
from .bootstrap import RESAMPLES, bootstrap_interval, weighted_jaccard
from .neighbours import kth_neighbour_distances
from .render import format_value, number, sweep_cell, verdict_cell
from .representation import sweep_ks

if TYPE_CHECKING:
    from ..data import EvalSet


#: How the threshold is read off the validation scores: Sun et al.'s own rule (the default), or a quantile.
THRESHOLD_RULES = ("sun2022", "quantile")


def tpr_threshold(validation_scores: np.ndarray, tpr: float = 0.95, rule: str = "sun2022") -> float:
    """The score at and above which a point is flagged OOD, set to keep ``tpr`` of the validation points.

    ``sun2022`` is the authors' rule (deeplearning-wisc/knn-ood, ``util/metrics.py``): with the
    scores negated (higher = more in-distribution) and sorted ascending, the threshold is the one
    at index ``round((1 - tpr) * n)`` (Python's rounding, half to even), and a point is flagged
    when its score reaches it (:func:`flag`). ``quantile`` is the smallest score that at least
    ``tpr`` of the validation scores do not exceed; a point is flagged above it. The two differ
    by one rank for about half of all validation sizes.
    """
    scores = np.asarray(validation_scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("Expected at least one in-distribution validation score but got none")
    if rule == "quantile":
        return float(np.quantile(scores, tpr, method="inverted_cdf"))
    if rule != "sun2022":
        raise ValueError(f"Expected rule to be one of {', '.join(THRESHOLD_RULES)} but got {rule!r}")
    # round(1 - tpr, 12): 1 - 0.95 is 0.050000000000000044 in binary, which would round 0.5 * n up.
    index = min(round(round(1.0 - tpr, 12) * len(scores)), len(scores) - 1)
    return float(-np.sort(-scores)[index])


def flag(scores: np.ndarray, threshold: float, rule: str = "sun2022") -> np.ndarray:
    """Which scores are out-of-distribution under ``threshold``: at or above it (``sun2022``), above it (``quantile``)."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores >= threshold if rule == "sun2022" else scores > threshold


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


def fpr_at_tpr(scores: np.ndarray, is_ood: np.ndarray, tpr: float = 0.95, rule: str = "sun2022") -> float:
    """Share of OOD points kept as in-distribution when the threshold keeps ``tpr`` of the ID points."""
    scores, is_ood = np.asarray(scores, dtype=np.float64), np.asarray(is_ood, dtype=bool)
    if is_ood.all() or not is_ood.any():
        raise ValueError("FPR@TPR needs both in- and out-of-distribution points")
    threshold = tpr_threshold(scores[~is_ood], tpr, rule)
    return float((~flag(scores[is_ood], threshold, rule)).mean())


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
    rule: str = "sun2022",
    same_as_validation: Sequence[int] | None = None,
) -> dict[int, OodDetection]:
    """Deep-NN detection of OOD challenge points for every k in ``ks`` (one search per set).

    ``same_as_validation[i]`` is the index of the validation point that challenge point ``i`` is
    (the same text), or -1: such a point gets its validation score, so it is judged exactly as
    the threshold judged it (two FAISS searches can return distances 1e-6 apart).
    """
    if challenge.shape[0] != len(ids):
        raise ValueError(f"Expected {len(ids)} challenge embeddings but got {challenge.shape[0]}")
    val_scores = kth_neighbour_distances(bank, validation, ks)
    chal_scores = kth_neighbour_distances(bank, challenge, ks)
    if same_as_validation is not None:
        same = np.asarray(same_as_validation)
        for k in chal_scores:
            chal_scores[k] = np.where(same >= 0, val_scores[k][np.maximum(same, 0)], chal_scores[k])
    id_array = np.asarray(ids, dtype=object)
    labelled = is_ood is not None and 0 < int(np.sum(is_ood)) < len(ids)
    out = {}
    for k in sorted(val_scores):
        threshold = tpr_threshold(val_scores[k], tpr, rule)
        scores = chal_scores[k]
        out[k] = OodDetection(
            k=k,
            threshold=threshold,
            scores=scores,
            flagged=frozenset(id_array[flag(scores, threshold, rule)].tolist()),
            n=len(ids),
            auroc=auroc(scores, is_ood) if labelled else None,
            fpr_at_tpr95=fpr_at_tpr(scores, is_ood, tpr, rule) if labelled else None,
        )
    return out


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class OodAgreement(Result):
    """Jaccard of two models' OOD sets on a challenge set, with both detections beside it.

    ``bank`` names the in-distribution bank; ``validation`` the validation set (None: a tenth
    held out of the bank); ``sweep`` = {k: Jaccard}.
    """

    metric = "ood_agreement"
    setting = ("pooling", "k", "tpr", "threshold_rule", "bank", "validation")

    k: int
    tpr: float
    pooling: str
    reference_detection: OodDetection
    candidate_detection: OodDetection
    both_empty: bool
    differing_ids: list[str]
    bank: str = ""
    validation: str | None = dataclasses.field(default=None, metadata={"keep": True})
    sweep: dict[int, float] | None = None
    threshold_rule: str = "sun2022"


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
    **setting: Any,
) -> OodAgreement:
    """Jaccard(O_ref, O_cand); two empty OOD sets agree perfectly (1.0).

    ``interval`` is a seeded bootstrap 95% interval over challenge points, the detectors'
    thresholds held fixed (``resamples=0``: none). ``setting``: the result's other fields
    (``bank``, ``validation``, ``sweep``, ``threshold_rule``).
    """
    o_ref, o_cand = reference_detection.flagged, candidate_detection.flagged
    position = {point: i for i, point in enumerate(ids)}
    in_ref = np.array([point in o_ref for point in ids], dtype=bool)
    in_cand = np.array([point in o_cand for point in ids], dtype=bool)
    interval = (bootstrap_interval(weighted_jaccard(in_ref, in_cand), len(ids), resamples=resamples, seed=seed)
                if resamples else None)
    return OodAgreement(
        value=jaccard(o_ref, o_cand),
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
        **setting,
    )


# -- the characteristic ---------------------------------------------------------------------------


def held_out_split(n: int, share: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(bank indices, validation indices): a seeded ``share`` of ``n`` points held out for validation."""
    if n < 2:
        raise UsageError(f"The training bank needs at least 2 points to hold some out for validation; it has {n}")
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, round(n * share))
    return np.sort(order[held:]), np.sort(order[:held])


def ood_agreement(
    reference: Model,
    candidate: Model,
    ood_set: EvalSet,
    *,
    train_set: EvalSet,
    validation_set: EvalSet | None = None,
    k: int = 10,
    tpr: float = 0.95,
    pooling: str | None = None,
    sweep: Sequence[int] | None = None,
    rule: str | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
) -> OodAgreement:
    """Jaccard of the challenge points each model flags as out-of-distribution (paper, section 5).

    Each model is a Deep Nearest Neighbors detector (Sun et al. 2022): the score of a point
    is the distance from its L2-normalised embedding to the k-th nearest one of
    ``train_set`` (the in-distribution bank); the threshold keeps ``tpr`` of
    ``validation_set`` (default: a seeded held-out tenth of ``train_set``, at least one
    point). Where ``ood_set`` has in/out flags, each model's AUROC and FPR@TPR95 are reported too.
    ``rule``: how the threshold is read off (:func:`tpr_threshold`; default: the session's
    ``ood_threshold_rule``, whose default is the authors' own, ``sun2022``).
    """
    data = {"ood": ood_set, "train": train_set, "validation": validation_set}
    params = {"k": check_positive_int(k, "k", "ood_agreement"), "tpr": check_fraction(tpr, "tpr", "ood_agreement"),
              "pooling": pooling, "sweep": sweep, "rule": rule}
    return DataDistribution().run("ood_agreement", reference, candidate, data, params, resamples=resamples,
                                  record=record)


def assert_ood_agreement(
    reference: Model,
    candidate: Model,
    ood_set: EvalSet,
    *,
    train_set: EvalSet,
    min: float,
    validation_set: EvalSet | None = None,
    k: int = 10,
    pooling: str | None = None,
) -> OodAgreement:
    """Fail unless the Jaccard of the two models' OOD sets is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_ood_agreement")
    data = {"ood": ood_set, "train": train_set, "validation": validation_set}
    params = {"k": check_positive_int(k, "k", "assert_ood_agreement"), "pooling": pooling}
    return DataDistribution().run("assert_ood_agreement", reference, candidate, data, params, threshold=threshold)


class DataDistribution(Characteristic):
    """Do two models flag the same challenge points as out-of-distribution? Jaccard of Deep-NN OOD sets."""

    name = "ood_agreement"
    title = "data distribution, Deep-NN OOD sets (paper section 5):"
    summary = "Jaccard of the challenge points each model's Deep Nearest Neighbors detector flags as OOD"
    params = {"k": Param(POSITIVE_INT, 10)}
    needs = {"train": "training bank", "ood": "challenge (OOD) set"}
    uses = ("validation",)
    outputs = ("embeddings",)
    primary = "ood"
    figure = ("Data distribution: OOD-set Jaccard against k", "k")
    result_type = OodAgreement

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> OodAgreement:
        ood_set, train_set, validation_set = data["ood"], data["train"], data.get("validation")
        settings = evidence.settings
        k, tpr = params.get("k", 10), params.get("tpr", 0.95)
        pooling = params.get("pooling") or settings.pooling
        sweep = params.get("sweep")
        rule = params.get("rule") or settings.ood_threshold_rule
        if rule not in THRESHOLD_RULES:
            raise UsageError(f"Expected the OOD threshold rule to be one of {', '.join(THRESHOLD_RULES)} but got {rule!r}")
        check = "the data-distribution check"
        bank_index, val_index = held_out_split(len(train_set)) if validation_set is None else (None, None)
        bank_size = len(bank_index) if bank_index is not None else len(train_set)
        if k > bank_size:
            raise UsageError(
                f"The 'k' parameter of ood_agreement must be at most the bank's size, {bank_size} points of "
                f"{train_set.name!r}. Got {k} instead."
            )
        ks = sweep_ks(k, settings.sweep if sweep is None else sweep, bank_size)
        is_ood = np.array(ood_set.ood) if ood_set.ood is not None else None
        validation_texts = validation_set.texts if validation_set is not None else [train_set.texts[i] for i in val_index]
        position = {text: i for i, text in enumerate(validation_texts)}
        same = [position.get(text, -1) for text in ood_set.texts]

        def detect(model: Model) -> dict:
            train = evidence.embeddings(model, train_set, pooling, check=check)
            if validation_set is None:
                bank, validation = train[bank_index], train[val_index]
            else:
                bank, validation = train, evidence.embeddings(model, validation_set, pooling, check=check)
            challenge = evidence.embeddings(model, ood_set, pooling, check=check)
            return detect_ood(ood_set.ids, bank=bank, validation=validation, challenge=challenge, ks=ks, tpr=tpr,
                              is_ood=is_ood, rule=rule, same_as_validation=same)

        # One detector per model and setting, however many pairs it is in (the all-pairs matrix).
        setting = (train_set.content_key, validation_set.content_key if validation_set else None, ood_set.content_key,
                   pooling, tuple(ks), tpr, rule)
        ref_d, cand_d = (evidence.memo(("ood", m.key, *setting), lambda m=m: detect(m)) for m in (reference, candidate))
        return compare_ood(
            ood_set.ids, ref_d[k], cand_d[k], reference=reference.name, candidate=candidate.name, dataset=ood_set.name,
            tpr=tpr, pooling=pooling, resamples=resamples, bank=train_set.name, threshold_rule=rule,
            validation=validation_set.name if validation_set is not None else None,  # None: held out of the bank
            sweep={kk: float(compare_ood(ood_set.ids, ref_d[kk], cand_d[kk], resamples=0)) for kk in ks})

    def pair_params(self, result: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        return {"k": result["k"], "tpr": result["tpr"], "pooling": result["pooling"], "sweep": (),
                "rule": result["threshold_rule"]}

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = []
        for r in results:
            ref, cand = r["reference_detection"], r["candidate_detection"]
            count = lambda d: d.get("flagged_count", len(d.get("flagged", [])))  # noqa: E731
            rows.append([
                r["reference"], r["candidate"], r["dataset"], r["n"], r["k"], format_value(r),
                f"{ref['threshold']:.4f} / {cand['threshold']:.4f}",
                f"{count(ref)} ({count(ref) / ref['n']:.3f}) / {count(cand)} ({count(cand) / cand['n']:.3f})",
                f"{number(ref['auroc'])} / {number(cand['auroc'])}",
                f"{number(ref['fpr_at_tpr95'])} / {number(cand['fpr_at_tpr95'])}", sweep_cell(r), verdict_cell(r),
            ])
        headers = ["reference", "candidate", "challenge", "n", "k", "OOD Jaccard [95% CI]", "threshold ref/cand",
                   "OOD count (rate) ref/cand", "AUROC ref/cand", "FPR@TPR95 ref/cand", "Jaccard by k", "gate"]
        return headers, rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        settings = {(r["bank"], r.get("validation") or "", r["tpr"], r.get("threshold_rule", "quantile")) for r in results}
        rules = {"sun2022": "Sun et al.'s rule", "quantile": "a quantile"}
        return [f"OOD bank: {bank}; threshold keeps {tpr:.0%} of: {validation or f'held-out 10% of {bank}'} "
                f"({rules.get(rule, rule)})" for bank, validation, tpr, rule in sorted(settings)]

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: OodAgreement, limit: int = 5) -> list[dict[str, str]]:
        """Challenge points flagged by exactly one model: the text and which model flags it."""
        ood_set = data["ood"]
        where = {point: i for i, point in enumerate(ood_set.ids)}
        flagged_by = lambda p: reference.name if p in result.reference_detection.flagged else candidate.name  # noqa: E731
        return [{"id": p, "text": ood_set.texts[where[p]], "flagged as out-of-distribution by": flagged_by(p)}
                for p in result.differing_ids[:limit]]

    def failure(self, *, result: OodAgreement, verdict: Verdict):
        ref, cand = result.reference_detection, result.candidate_detection
        head = f"{result.candidate} does not flag the out-of-distribution points {result.reference} flags in {result.dataset}"
        headers = ["metric", "threshold", "value", "n", "k", "|O_ref|", "|O_cand|", "|O_ref∩O_cand|"]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n, result.k, len(ref.flagged),
               len(cand.flagged), len(ref.flagged & cand.flagged)]
        return Failure(head, headers, row, result.differing_ids, "ids flagged by exactly one model")
