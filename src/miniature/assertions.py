"""Assertion helpers: a gate that fails with a small, readable table."""

from __future__ import annotations

from .characteristics.prediction_errors import ErrorJaccard
from .checks import error_jaccard
from .data import EvalSet
from .report.terminal import failure_message
from .runner import Model
from .validation import check_fraction


class GateFailure(AssertionError):
    """A model pair fell below a gate's threshold."""


def assert_error_jaccard(reference: Model, candidate: Model, eval_set: EvalSet, *, min: float) -> ErrorJaccard:
    """Fail unless the error-set Jaccard of the pair is at least ``min``; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_error_jaccard")
    result = error_jaccard(reference, candidate, eval_set)
    result.threshold, result.passed = threshold, float(result) >= threshold
    if not result.passed:
        raise GateFailure(failure_message(result, threshold))
    return result
