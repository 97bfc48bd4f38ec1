"""Cells of the characteristics' tables: what a third-party characteristic's ``rows`` and ``failure`` use to read
like the built-ins' (a value with its interval, a gate's verdict, a K sweep, a number or "-")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def format_value(r: Mapping[str, Any] | Any, spec: str = ".4f", interval_spec: str = ".3f") -> str:
    """A value with its interval: ``0.6167 [0.491, 0.738]``; NaN (None in a report) as ``-``. ``r``: a report's
    result dict, or a live :class:`~miniature.characteristics.base.Result`."""
    if not isinstance(r, Mapping):
        r = {"value": r.value, "interval": r.interval, "both_empty": getattr(r, "both_empty", False)}
    value = r.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    interval = r.get("interval")
    text = f"{value:{spec}}" + (f" [{interval[0]:{interval_spec}}, {interval[1]:{interval_spec}}]" if interval else "")
    return text + (" (both empty)" if r.get("both_empty") else "")


def verdict_cell(r: Mapping[str, Any], *, words: tuple[str, str] = ("min", "lower bound")) -> str:
    """``PASS (min 0.5)`` / ``FAIL (lower bound 0.5)`` for a gated report dict, else empty; ``words``
    name the bound on the point estimate and on the interval."""
    if r.get("threshold") is None:
        return ""
    lower = r.get("gate_mode", "point") == "lower"
    return ("PASS" if r["passed"] else "FAIL") + f" ({words[lower]} {r['threshold']:g})"


def sweep_cell(r: Mapping[str, Any]) -> str:
    sweep = r.get("sweep") or {}
    values = {int(k): (v[0] if isinstance(v, (list, tuple)) else v) for k, v in sweep.items()}
    return " ".join(f"{k}:{v:.3f}" for k, v in sorted(values.items()))


def number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None or value != value else f"{value:{spec}}"
