"""Assertion helpers: gates that fail with a small, readable table.

Each compares the agreement's point estimate with ``min``, or, when the Runner's settings
say ``gate = "lower"``, the lower end of its bootstrap 95% interval.
"""

from __future__ import annotations

from typing import Any

from .characteristics.distribution import OodAgreement
from .characteristics.prediction_errors import ErrorJaccard
from .characteristics.representation import KnnAgreement
from .checks import error_jaccard, knn_agreement, ood_agreement
from .data import EvalSet
from .report.terminal import failure_message
from .runner import Model
from .validation import check_fraction


class GateFailure(AssertionError):
    """A model pair fell below a gate's threshold."""


def _gate(result: Any, threshold: float, mode: str) -> Any:
    """Compare the point estimate, or with ``mode="lower"`` the interval's lower end, with ``threshold``."""
    __tracebackhide__ = True
    compared = result.interval[0] if mode == "lower" and result.interval is not None else float(result)
    result.threshold, result.gate_mode, result.passed = threshold, mode, compared >= threshold
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
