"""Plain-text tables for the terminal summary and for gate failure messages.

Each characteristic renders its own table (its ``rows``, ``notes`` and ``failure``); this
module lays them out in the registry's order and adds what is common to all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..characteristics import registry
from ..characteristics.base import Characteristic, Result, Verdict

_CONTROL = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7f, 0xa0))}


def printable(text: object) -> str:
    """``text`` with control characters (ESC sequences, carriage returns, newlines) shown as ``\\xNN``:
    model, data set and id names come from users' files and must not drive the terminal."""
    return str(text).translate(_CONTROL)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [list(map(printable, headers))] + [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plain(result: Any) -> dict[str, Any]:
    """A result as the JSON report stores it (report dicts pass through; ledger entries keep their verdict)."""
    if isinstance(result, dict):
        return result
    from .json_report import trim

    return trim(result.as_dict())


def _measured(results: Sequence[Any]) -> list[dict[str, Any]]:
    return [r for r in map(plain, results) if r.get("status", "ok") == "ok"]


def sections(results: Sequence[Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) for each characteristic that has results, in the registry's order."""
    results = _measured(results)
    out = []
    for name, characteristic in registry.characteristics().items():
        chosen = [r for r in results if r["metric"] == name]
        if chosen:
            out.append((characteristic.title, *characteristic.rows(results=chosen)))
    return out


def notes(results: Sequence[Any]) -> list[str]:
    """Lines that qualify the tables: each characteristic's own, empty sets, intervals, and every
    check that did not apply, with its reason."""
    every = [plain(r) for r in results]
    results = _measured(every)
    lines = []
    if any(r.get("both_empty") for r in results):
        lines.append("(both empty): neither model had a point in its set; two empty sets have Jaccard 1.0")
    for name, characteristic in registry.characteristics().items():
        chosen = [r for r in results if r["metric"] == name]
        if chosen:
            lines += characteristic.notes(results=chosen)
    unknown = sorted({r["metric"] for r in results} - set(registry.names()))
    if unknown:
        lines.append(f"not shown: results of {', '.join(unknown)}, a characteristic this installation does not have")
    if any(r.get("interval") for r in results):
        lines.append("[95% CI]: seeded bootstrap over the points of each data set (1,000 resamples)")
    lines += [f"not applicable: {r['metric']} of {r['reference']} vs {r['candidate']}: {r['reason']}"
              for r in every if r.get("status") == "not_applicable"]
    return lines


def summary(results: Sequence[Any]) -> list[str]:
    """The lines of the terminal summary: one table per characteristic that has results, then the notes."""
    lines: list[str] = []
    for title, headers, rows in sections(results):
        lines += [printable(title), *table(headers, rows).splitlines()]
    extra = [printable(line) for line in notes(results)]
    return lines + extra if lines or extra else []


def error_title(error: dict[str, Any]) -> str:
    """What an error of a report's ``errors`` ended: ``<check>[<candidate>]`` as pytest names a check item, a check,
    a candidate, or the run."""
    check, candidate = error.get("check"), error.get("candidate")
    if check and candidate:
        return f"{check}[{candidate}]"
    return check or candidate or "the run"


def error_lines(errors: Sequence[dict[str, Any]]) -> list[str]:
    """One line per error that ended a check, a test or the run."""
    return [printable(f"ERROR {error_title(e)} ({e['kind']} error): {e['message']}") for e in errors]


def failure_message(characteristic: Characteristic, result: Result, verdict: Verdict, *, examples: int = 10) -> str:
    """The message of a failed gate: metric, threshold, value with its interval, n and the most telling ids."""
    failure = characteristic.failure(result=result, verdict=verdict)
    head, ids = failure.headline, failure.ids
    if verdict.mode == "lower" and result.interval is not None:
        end = "upper" if verdict.bound == "max" else "lower"
        head += f" (the gate compares the interval's {end} end, {verdict.compared:.4f})"
    shown = [printable(i) for i in ids[:examples]]
    more = len(ids) - len(shown)
    return "\n".join([
        printable(head),
        table(failure.headers, [failure.row]),
        f"{failure.ids_are}: {', '.join(shown) or '(none)'}" + (f" (+{more} more)" if more > 0 else ""),
    ])


def matrix_rows(names: Sequence[str], values: dict[tuple[str, str], float | None]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of an upper-triangular matrix of pair values, as Table 2 of the paper lists its pairs."""
    def cell(a: str, b: str) -> str:
        if a == b:
            return "-"
        if (a, b) not in values:
            return ""
        return "n/a" if values[(a, b)] is None else f"{values[(a, b)]:.4f}"

    return ["", *names[1:]], [[a, *[cell(a, b) for b in names[1:]]] for a in names[:-1]]


def matrix_table(names: Sequence[str], values: dict[tuple[str, str], float | None]) -> str:
    return table(*matrix_rows(names, values))


def matrix_lines(matrices: dict[str, dict[str, Any]]) -> list[str]:
    """The all-pairs matrices of a report (Table 2 of the paper), one per characteristic."""
    lines = []
    for metric, matrix in matrices.items():
        if "not_computed" in matrix:
            lines.append(f"all pairs, {metric}: not computed ({matrix['not_computed']})")
            continue
        values = {(p["a"], p["b"]): p["value"] for p in matrix["pairs"]}
        lines += [printable(f"all pairs (Table 2), {matrix['title'].split(' (')[0]}, {metric}:"),
                  *matrix_table(matrix["models"], values).splitlines()]
        lines += [printable(f"  n/a: {reason}") for reason in matrix.get("not_applicable", [])]
    return lines
