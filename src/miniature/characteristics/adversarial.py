"""Characteristic 4 of the paper (section 6, Table 3): how much accuracy each model loses under attack.

Pure functions over per-example attack outcomes; nothing here runs a model or an attack.
An outcome is TextAttack's: ``skipped`` (the model was already wrong on the original text),
``successful`` (a perturbation changed a correct prediction) or ``failed`` (the model stayed
correct; a spent query budget also ends here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bootstrap import RESAMPLES, bootstrap_interval
from .prediction_errors import jaccard
from .result import Agreement

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


class AttackGap(Agreement):
    """The attack gate's figure: candidate's % accuracy drop minus the reference's, in percentage points.

    Positive: the candidate is more vulnerable than its reference. A float (the gap) carrying
    ``reference_summary`` and ``candidate_summary`` (Table 3 rows), ``success_jaccard``
    (Jaccard of the sets of successfully attacked examples), ``candidate_only_ids`` (attacked
    successfully on the candidate only), ``transfer_rate`` (share of the
    reference's adversarial examples that also fool the candidate, among those the candidate
    got right unperturbed; NaN when there are none), ``transferred``/``transfer_tried``,
    ``interval`` (bootstrap 95% interval of the gap over examples) and ``attack`` (the settings).
    """

    metric = "attack_robustness"

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
        gap, reference=reference_name, candidate=candidate_name, dataset=dataset, n=len(ids),
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
