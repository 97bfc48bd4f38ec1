"""Parameter checks declared once, so every message reads the same way."""

from __future__ import annotations

import math
from typing import Any

from .errors import UsageError


def check_fraction(value: Any, name: str, owner: str) -> float:
    """Return ``value`` as a float in [0, 1], or raise naming ``name`` and ``owner``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise UsageError(
            f"The {name!r} parameter of {owner} must be a number in the range [0, 1]. "
            f"Got {value!r} (type={type(value).__name__}) instead."
        )
    if not 0.0 <= value <= 1.0:
        raise UsageError(
            f"The {name!r} parameter of {owner} must be a number in the range [0, 1]. "
            f"Got {value!r} instead."
        )
    return float(value)


def check_positive_int(value: Any, name: str, owner: str) -> int:
    """Return ``value`` as an int >= 1, or raise naming ``name`` and ``owner``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(
            f"The {name!r} parameter of {owner} must be an int in the range [1, inf). "
            f"Got {value!r} instead."
        )
    return value


def check_finite(value: Any, name: str, owner: str) -> float:
    """Return ``value`` as a finite float, or raise naming ``name`` and ``owner``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(
            f"The {name!r} parameter of {owner} must be a finite number. Got {value!r} (type={type(value).__name__}) instead."
        )
    return float(value)


def check_in_range(value: Any, name: str, owner: str, low: float, high: float) -> float:
    """Return ``value`` as a finite float in [``low``, ``high``] (an infinite end is open), or raise naming ``name``
    and ``owner``; [0, 1] reads as :func:`check_fraction`, an unbounded range as :func:`check_finite`."""
    if (low, high) == (0.0, 1.0):
        return check_fraction(value, name, owner)
    if math.isinf(low) and math.isinf(high):
        return check_finite(value, name, owner)
    shown = f"{'(-inf' if math.isinf(low) else f'[{low:g}'}, {'inf)' if math.isinf(high) else f'{high:g}]'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(
            f"The {name!r} parameter of {owner} must be a number in the range {shown}. "
            f"Got {value!r} (type={type(value).__name__}) instead."
        )
    if not low <= value <= high:
        raise UsageError(f"The {name!r} parameter of {owner} must be a number in the range {shown}. Got {value!r} instead.")
    return float(value)
