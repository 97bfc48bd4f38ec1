"""Assertion helpers: gates that fail with a small, readable table.

Each compares the agreement's point estimate with ``min``, or, when the Runner's settings
say ``gate = "lower"``, the lower end of its bootstrap 95% interval.
"""

from __future__ import annotations

import math
from typing import Any

from .characteristics.adversarial import AttackGap
from .characteristics.distribution import OodAgreement
from .characteristics.prediction_errors import ErrorJaccard
from .characteristics.representation import KnnAgreement
from .checks import attack_robustness, error_jaccard, knn_agreement, ood_agreement
from .data import EvalSet
from .errors import UsageError
from .report.terminal import failure_message
from .runner import Model
from .validation import check_fraction


class GateFailure(AssertionError):
    """A model pair fell below a gate's threshold."""


def _gate(result: Any, threshold: float, mode: str, *, at_most: bool = False) -> Any:
    """Compare the point estimate with ``threshold``, or with ``mode="lower"`` the cautious end of its
    interval: the lower end for a minimum, the upper end for a maximum (``at_most``). NaN never passes."""
    __tracebackhide__ = True
    cautious = result.interval[1 if at_most else 0] if mode == "lower" and result.interval is not None else None
    compared = float(result) if cautious is None else cautious
    passed = compared <= threshold if at_most else compared >= threshold
    result.threshold, result.gate_mode, result.passed = threshold, mode, bool(passed)
    if not result.passed:
        raise GateFailure(failure_message(result, threshold))
    return result


def assert_error_jaccard(reference: Model, candidate: Model, eval_set: EvalSet, *, min: float) -> ErrorJaccard:
    """Fail unless the error-set Jaccard of the pair is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_error_jaccard")
    return _gate(error_jaccard(reference, candidate, eval_set), threshold, reference.runner.settings.gate)


def assert_knn_agreement(
    reference: Model, candidate: Model, eval_set: EvalSet, *, min: float, k: int = 10, pooling: str | None = None
) -> KnnAgreement:
    """Fail unless the mean KNN agreement (K = ``k``) of the pair is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_knn_agreement")
    result = knn_agreement(reference, candidate, eval_set, k=k, pooling=pooling)
    return _gate(result, threshold, reference.runner.settings.gate)


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
    result = ood_agreement(
        reference, candidate, ood_set, train_set=train_set, validation_set=validation_set, k=k, pooling=pooling
    )
    return _gate(result, threshold, reference.runner.settings.gate)


def assert_attack_robustness(
    reference: Model, candidate: Model, attack_set: EvalSet, *, max_gap: float, **settings: Any
) -> AttackGap:
    """Fail when ``candidate`` loses more than ``max_gap`` percentage points more of its accuracy to
    BERT-Attack than ``reference`` does (its % drop minus the reference's); return the result.

    ``settings`` override ``[tool.miniature.attack]`` (e.g. ``examples=50``). With ``gate = "lower"``
    the upper end of the gap's 95% interval is compared (the cautious end for an upper bound).
    """
    __tracebackhide__ = True
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, float)) or not math.isfinite(max_gap):
        raise UsageError(
            f"The 'max_gap' parameter of assert_attack_robustness must be a finite number of percentage points. "
            f"Got {max_gap!r} instead."
        )
    result = attack_robustness(reference, candidate, attack_set, **settings)
    return _gate(result, float(max_gap), reference.runner.settings.gate, at_most=True)
