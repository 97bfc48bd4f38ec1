"""How results moved against a baseline: the report of the last accepted candidates.

A baseline is any JSON report (``--miniature-save-baseline`` writes one). Results are
matched on (check, candidate name, K, pooling), so a team that keeps its candidate's alias
stable sees each release against the last accepted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..characteristics.base import number
from .terminal import plain, table


def _key(r: dict[str, Any]) -> tuple:
    """A result's identity without the reference and data set names (which may move between releases)."""
    from ..characteristics.registry import identity_of

    metric, _, candidate, _, *setting = identity_of(r)
    return (metric, candidate, *setting)


def baseline_rows(results: Sequence[Any], baseline: dict[str, Any]) -> list[list[Any]]:
    """[check, candidate, K, baseline, now, change] for every result the baseline also has."""
    before = {_key(r): r for r in baseline["results"] if r.get("status", "ok") == "ok"}
    rows = []
    for r in (r for r in map(plain, results) if r.get("status", "ok") == "ok"):
        old = before.get(_key(r))
        if old is not None:
            was, now = old["value"], r["value"]  # None: NaN in the report (e.g. a gap with nothing to lose)
            change = "-" if was is None or now is None else f"{now - was:+.4f}"
            rows.append([r["metric"], r["candidate"], r.get("k") or "", number(was), number(now), change])
    return rows



def baseline_lines(results: Sequence[Any], baseline: dict[str, Any], source: str) -> list[str]:
    rows = baseline_rows(results, baseline)
    if not rows:
        return [f"baseline {source} ({baseline['created']}): no result matches (check, candidate, K, pooling)"]
    return [f"against baseline {source} ({baseline['created']}):",
            *table(["check", "candidate", "K", "baseline", "now", "change"], rows).splitlines()]
