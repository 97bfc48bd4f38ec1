"""Plain-text tables for the terminal summary and for assertion messages."""

from __future__ import annotations

from collections.abc import Sequence

from ..characteristics.prediction_errors import ErrorJaccard


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def error_rows(results: Sequence[ErrorJaccard]) -> str:
    """One row per (reference, candidate) pair: the prediction-error figures of the paper and beyond."""
    rows = []
    for r in results:
        verdict = "" if getattr(r, "threshold", None) is None else ("PASS" if r.passed else "FAIL") + f" (min {r.threshold:g})"
        value = f"{float(r):.4f}" + (" (both empty)" if r.both_empty else "")
        rows.append([
            r.reference, r.candidate, r.dataset, r.n, value,
            f"{r.accuracy_reference:.4f}", f"{r.accuracy_candidate:.4f}",
            r.errors_reference, r.errors_candidate, r.errors_both,
            "yes" if r.reference_subset else "no", f"{r.negative_flip_rate:.4f}", verdict,
        ])
    headers = ["reference", "candidate", "eval", "n", "error Jaccard", "acc ref", "acc cand",
               "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "E_ref⊆E_cand", "neg. flip", "gate"]
    return table(headers, rows)


def failure_message(result: ErrorJaccard, threshold: float, *, examples: int = 10) -> str:
    """The message of a failed gate: metric, threshold, value, n and the most telling ids."""
    shown = result.differing_ids[:examples]
    more = len(result.differing_ids) - len(shown)
    lines = [
        f"{result.candidate} does not make the errors {result.reference} makes on {result.dataset}",
        table(
            ["metric", "threshold", "value", "n", "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "neg. flip"],
            [[result.metric, f">= {threshold:g}", f"{float(result):.4f}", result.n, result.errors_reference,
              result.errors_candidate, result.errors_both, f"{result.negative_flip_rate:.4f}"]],
        ),
        f"ids wrong for exactly one model, largest change in gold-class probability first: "
        f"{', '.join(shown) or '(none)'}" + (f" (+{more} more)" if more > 0 else ""),
    ]
    return "\n".join(lines)
