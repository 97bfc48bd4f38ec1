"""Characteristic 4 of the paper (section 6, Table 3): how much accuracy each model loses under attack.

Pure functions over per-example attack outcomes; nothing here runs a model or an attack.
An outcome is TextAttack's: ``skipped`` (the model was already wrong on the original text),
``successful`` (a perturbation changed a correct prediction) or ``failed`` (the model stayed
correct; a spent query budget also ends here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evidence import Evidence, Model
from ..maths import jaccard
from ..validation import check_finite
from .base import Characteristic, Failure, Result, Verdict, session_of
from .bootstrap import RESAMPLES, bootstrap_interval
from .render import number, verdict_cell

if TYPE_CHECKING:
    from ..attack.settings import AttackSettings
    from ..data import EvalSet

STATUSES = ("successful", "failed", "skipped")


@dataclass(frozen=True)
class AttackOutcome:
    """One attacked example: its outcome, the text the attack ended with, and what it cost."""

    id: str
    status: str
    perturbed_text: str
    queries: int
    words: int
    words_changed: int

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Expected an attack status in {', '.join(STATUSES)} but got {self.status!r}")


@dataclass(frozen=True)
class AttackSummary:
    """One row of the paper's Table 3 for one target model, plus TextAttack's attack statistics."""

    model: str
    n: int
    successful: int
    failed: int
    skipped: int
    original_accuracy: float
    attacked_accuracy: float
    #: original_accuracy - attacked_accuracy, and the same as a % of original_accuracy (NaN when that is 0).
    absolute_change: float
    percent_change: float
    #: successful / (successful + failed): TextAttack's attack success rate (NaN when every example was skipped).
    success_rate: float
    #: Mean model queries per attacked (not skipped) example.
    average_queries: float
    #: Mean share of words changed in the successful adversarial examples.
    perturbed_word_share: float


def summarize_attack(model: str, outcomes: Sequence[AttackOutcome]) -> AttackSummary:
    """Table 3's row for ``model`` from its per-example ``outcomes``."""
    if not outcomes:
        raise ValueError(f"Expected at least one attack outcome for {model!r}")
    statuses = [o.status for o in outcomes]
    successful, failed, skipped = (statuses.count(s) for s in STATUSES)
    n = len(outcomes)
    before, after = (successful + failed) / n, failed / n
    attacked = [o for o in outcomes if o.status != "skipped"]
    wins = [o for o in outcomes if o.status == "successful"]
    return AttackSummary(
        model=model, n=n, successful=successful, failed=failed, skipped=skipped,
        original_accuracy=before, attacked_accuracy=after, absolute_change=before - after,
        percent_change=percent_drop(before, after),
        success_rate=successful / len(attacked) if attacked else float("nan"),
        average_queries=float(np.mean([o.queries for o in attacked])) if attacked else 0.0,
        perturbed_word_share=float(np.mean([o.words_changed / max(o.words, 1) for o in wins])) if wins else 0.0,
    )


def percent_drop(before: float, after: float) -> float:
    """Accuracy lost under attack as a % of the accuracy before it (NaN when there was none to lose)."""
    return 100.0 * (before - after) / before if before > 0 else float("nan")


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class AttackGap(Result):
    """The attack gate's figure: candidate's % accuracy drop minus the reference's, in percentage points.

    Positive: the candidate is more vulnerable than its reference. Carries
    ``reference_summary`` and ``candidate_summary`` (Table 3 rows), ``success_jaccard``
    (Jaccard of the sets of successfully attacked examples), ``candidate_only_ids`` (attacked
    successfully on the candidate only), ``transfer_rate`` (share of the
    reference's adversarial examples that also fool the candidate, among those the candidate
    got right unperturbed; NaN when there are none), ``transferred``/``transfer_tried``,
    ``interval`` (bootstrap 95% interval of the gap over examples) and ``attack`` (the settings).
    """

    metric = "attack_robustness"
    setting = ("attack",)

    reference_summary: AttackSummary
    candidate_summary: AttackSummary
    success_jaccard: float
    candidate_only_ids: list[str]
    transfer_rate: float
    transferred: int
    transfer_tried: int
    attack: dict[str, Any]

    def __repr__(self) -> str:
        return (f"AttackGap({float(self):+.2f} points, reference={self.reference!r}, "
                f"candidate={self.candidate!r}, n={self.n})")


def compare_attacks(
    ids: Sequence[str],
    reference: Sequence[AttackOutcome],
    candidate: Sequence[AttackOutcome],
    *,
    transfer_fooled: dict[str, bool] | None = None,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
    dataset: str = "",
    attack: dict[str, Any] | None = None,
    resamples: int = RESAMPLES,
) -> AttackGap:
    """The gap between two models' % accuracy drops on the same attacked examples.

    ``transfer_fooled`` maps each id of the reference's successful examples that the
    candidate got right unperturbed to whether the reference's adversarial text fools the
    candidate too.
    """
    ids = list(ids)
    for name, outcomes in (("reference", reference), ("candidate", candidate)):
        if [o.id for o in outcomes] != ids:
            raise ValueError(f"Expected the {name}'s attack outcomes for the same examples, in order, as ids")
    ref, cand = summarize_attack(reference_name, reference), summarize_attack(candidate_name, candidate)
    gap = cand.percent_change - ref.percent_change
    succeeded = lambda outcomes: {o.id for o in outcomes if o.status == "successful"}  # noqa: E731
    transfer_fooled = transfer_fooled or {}
    interval = None
    if resamples and len(ids) > 1:
        interval = bootstrap_interval(_gap_statistic(reference, candidate), len(ids), resamples=resamples)
    return AttackGap(
        value=gap, reference=reference_name, candidate=candidate_name, dataset=dataset, n=len(ids),
        reference_summary=ref, candidate_summary=cand,
        success_jaccard=jaccard(succeeded(reference), succeeded(candidate)),
        candidate_only_ids=sorted(succeeded(candidate) - succeeded(reference)),
        transfer_rate=(sum(transfer_fooled.values()) / len(transfer_fooled)) if transfer_fooled else float("nan"),
        transferred=sum(transfer_fooled.values()), transfer_tried=len(transfer_fooled),
        interval=interval, attack=dict(attack or {}),
    )


def _gap_statistic(reference: Sequence[AttackOutcome], candidate: Sequence[AttackOutcome]):
    """Resample statistic of the gap: each model's % drop from weighted counts of correct-before/after."""
    def indicators(outcomes: Sequence[AttackOutcome]) -> tuple[np.ndarray, np.ndarray]:
        status = np.array([o.status for o in outcomes])
        return (status != "skipped").astype(np.float64), (status == "failed").astype(np.float64)

    (ref_before, ref_after), (cand_before, cand_after) = indicators(reference), indicators(candidate)

    def drop(counts: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        b, a = counts @ before, counts @ after
        return np.divide(100.0 * (b - a), b, out=np.full_like(b, np.nan), where=b > 0)

    return lambda counts: drop(counts, cand_before, cand_after) - drop(counts, ref_before, ref_after)


# -- the characteristic ---------------------------------------------------------------------------


def attack_robustness(
    reference: Model,
    candidate: Model,
    attack_set: EvalSet,
    *,
    settings: AttackSettings | None = None,
    resamples: int = RESAMPLES,
    record: bool = True,
    **changes: Any,
) -> AttackGap:
    """How much more accuracy ``candidate`` loses to BERT-Attack than ``reference`` (paper, section 6).

    Both models are attacked on the same examples of ``attack_set`` (labelled) with the
    session's ``[tool.miniature.attack]`` settings, or ``settings``, with keyword ``changes``
    (e.g. ``max_candidates=48, examples=100``) applied. Returns an :class:`AttackGap`: the
    candidate's % accuracy drop minus the reference's, carrying both Table 3 rows, the Jaccard
    of the successfully attacked sets and the transfer rate of the reference's adversarial
    examples to the candidate. Needs the ``attack`` extra (TextAttack).
    """
    session = session_of(reference, candidate, "attack_robustness")
    params = {"settings": (settings or session.settings.attack).replace(**changes)}
    return AdversarialVulnerability().run("attack_robustness", reference, candidate, {"attack_set": attack_set}, params,
                                          resamples=resamples, record=record)


def assert_attack_robustness(
    reference: Model, candidate: Model, attack_set: EvalSet, *, max_gap: float, **settings: Any
) -> AttackGap:
    """Fail when ``candidate`` loses more than ``max_gap`` percentage points more of its accuracy to
    BERT-Attack than ``reference`` does (its % drop minus the reference's); return the result.

    ``settings`` override ``[tool.miniature.attack]`` (e.g. ``examples=50``). With ``gate = "lower"``
    the upper end of the gap's 95% interval is compared (the cautious end for an upper bound).
    """
    __tracebackhide__ = True
    threshold = check_finite(max_gap, "max_gap", "assert_attack_robustness")
    session = session_of(reference, candidate, "assert_attack_robustness")
    params = {"settings": session.settings.attack.replace(**settings)}
    return AdversarialVulnerability().run("assert_attack_robustness", reference, candidate, {"attack_set": attack_set},
                                          params, threshold=threshold)


class AdversarialVulnerability(Characteristic):
    """How much more accuracy does the candidate lose to BERT-Attack than its reference? A gap: lower is better."""

    name = "attack_robustness"
    title = "adversarial vulnerability, BERT-Attack (paper section 6, Table 3):"
    summary = "candidate's % accuracy drop under BERT-Attack minus the reference's, in percentage points"
    higher_is_better = False
    bound_key = "max_gap"
    synonyms = ("attack_drop_gap",)  # DESIGN.md's name
    needs = {"attack_set": "attack set"}
    pairwise = False
    result_type = AttackGap

    def params_for(self, threshold: Any) -> dict[str, Any]:
        return {}

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> AttackGap:
        from ..attack.offline import TEXTATTACK_VERSION
        from ..data import EvalSet

        attack_set = data["attack_set"]
        settings = params.get("settings") or evidence.settings.attack
        ref_out, cand_out = (evidence.attack_outcomes(m, attack_set, settings) for m in (reference, candidate))
        # Transfer: the reference's adversarial texts, shown to the candidate where it was right before.
        tried = [(r.id, r.perturbed_text) for r, c in zip(ref_out, cand_out) if r.status == "successful" and c.status != "skipped"]
        fooled: dict[str, bool] = {}
        if tried:
            gold = dict(zip(attack_set.ids, attack_set.require_labels("the adversarial-vulnerability check")))
            adversarial = EvalSet(f"{attack_set.name} attacked on {reference.name}", tuple(i for i, _ in tried),
                                  tuple(t for _, t in tried), tuple(gold[i] for i, _ in tried), attack_set.label_names)
            correct = evidence.decisions(candidate, adversarial, check="the adversarial-vulnerability check").correct
            fooled = {i: not bool(right) for (i, _), right in zip(tried, correct)}
        return compare_attacks(
            [o.id for o in ref_out], ref_out, cand_out, transfer_fooled=fooled, reference_name=reference.name,
            candidate_name=candidate.name, dataset=attack_set.name,
            attack={**asdict(settings), "textattack": TEXTATTACK_VERSION}, resamples=resamples,
        )

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        """The paper's Table 3: one row per target model (each reference once), then the pair figures."""
        rows, shown = [], set()

        def target(summary: dict[str, Any], dataset: str) -> list[Any]:
            return [summary["model"], dataset, summary["n"], number(summary["original_accuracy"]),
                    number(summary["attacked_accuracy"]), number(summary["absolute_change"]),
                    number(summary["percent_change"], ".2f"), number(summary["success_rate"]),
                    number(summary["average_queries"], ".1f"), number(summary["perturbed_word_share"], ".3f")]

        for r in results:
            ref = r["reference_summary"]
            if (ref["model"], r["dataset"]) not in shown:
                shown.add((ref["model"], r["dataset"]))
                rows.append([*target(ref, r["dataset"]), "(reference)", "", "", ""])
            interval = r.get("interval")
            # An interval read back from JSON is [null, null] where the gap is NaN (a model with nothing to lose).
            known = interval and None not in interval
            gap = number(r["value"], "+.2f") + (f" [{interval[0]:+.1f}, {interval[1]:+.1f}]" if known else "")
            transfer = f"{number(r['transfer_rate'], '.3f')} ({r['transferred']}/{r['transfer_tried']})"
            rows.append([*target(r["candidate_summary"], r["dataset"]), gap, number(r["success_jaccard"]), transfer,
                         verdict_cell(r, words=("max gap", "upper bound"))])
        headers = ["target", "attack set", "n", "orig. acc", "after attack", "abs. change", "% change", "success rate",
                   "avg queries", "words changed", "gap vs ref [95% CI]", "success Jaccard", "transfer", "gate"]
        return headers, rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        attacks = {json.dumps(r["attack"], sort_keys=True) for r in results}
        lines = [attack_note(json.loads(attack)) for attack in sorted(attacks)]
        if results:
            lines.append("gap: candidate's % change minus the reference's (positive: more vulnerable); transfer: share "
                         "of the reference's adversarial examples that also fool the candidate")
        return lines

    def failure(self, *, result: AttackGap, verdict: Verdict):
        ref, cand = result.reference_summary, result.candidate_summary
        head = (f"{result.candidate} loses {cand.percent_change:.1f}% of its accuracy to BERT-Attack on {result.dataset}, "
                f"{float(result):+.1f} points against {result.reference}'s {ref.percent_change:.1f}%")
        headers = ["metric", "max gap", "gap [95% CI]", "n", "acc ref before/after", "acc cand before/after", "transfer"]
        gap = f"{float(result):+.2f}" + (f" [{result.interval[0]:+.1f}, {result.interval[1]:+.1f}]" if result.interval else "")
        row = [result.metric, f"<= {verdict.threshold:g}", gap, result.n,
               f"{ref.original_accuracy:.3f}/{ref.attacked_accuracy:.3f}",
               f"{cand.original_accuracy:.3f}/{cand.attacked_accuracy:.3f}", number(result.transfer_rate, ".3f")]
        return Failure(head, headers, row, result.candidate_only_ids, "ids attacked successfully on the candidate only")


def attack_note(attack: dict[str, Any]) -> str:
    """One line naming every setting of an attack (what Table 3's numbers depend on)."""
    limits = [f"max {attack['max_percent']:.0%} of words"] + ([f"max {attack['max_words']} words"] if attack.get("max_words") else [])
    similarity = (f"cosine >= {attack['similarity_threshold']:g} on {attack['similarity_model']}"
                  if attack.get("similarity_model") else "no sentence-similarity constraint")
    budget = f"{attack['query_budget']} queries/example" if attack.get("query_budget") else "unlimited queries"
    return (f"BERT-Attack (TextAttack {attack.get('textattack')}): masked LM {attack['model']}, K={attack['max_candidates']} "
            f"candidates/word, {', '.join(limits)}, {similarity}, {budget}")
