"""What a finished run prints and writes, the same for the pytest plugin and ``miniature compare``:
the summary with its all-pairs matrices, then the JSON, baseline, HTML and Markdown outputs the
options ask for. Everything works from a report dict, so the xdist controller (which has only
its workers' reports) prints and writes exactly what a single process would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import MiniatureError
from .terminal import error_lines, matrix_lines, printable, summary


def summary_lines(report: dict[str, Any], *, cache: str) -> list[str]:
    """The tables, the all-pairs matrices, and where the outputs and attack outcomes came from."""
    outputs = report["outputs"]
    lines = summary(report["results"]) + matrix_lines(report.get("matrices") or {}) + legend(report.get("models") or {})
    lines.append(f"model outputs: {outputs['computed']} computed ({outputs['seconds_computing']:.1f}s), "
                 f"{outputs['from_cache']} from cache (cache: {cache})")
    if outputs.get("attacked") or outputs.get("attacks_from_cache"):
        lines.append(f"attacks: {outputs['attacked']} examples attacked ({outputs['seconds_attacking']:.1f}s), "
                     f"{outputs['attacks_from_cache']} outcomes from cache")
    return lines + [printable(f"warning: {w}") for w in report.get("warnings") or []] + \
        error_lines(report.get("errors") or [])


def legend(models: dict[str, Any]) -> list[str]:
    """One line naming the spec behind each short display name (only when some name is not its own spec)."""
    pairs = [(name, model.get("location") or model.get("spec")) for name, model in models.items()]
    if all(name == spec for name, spec in pairs):
        return []
    return [printable("models: " + "; ".join(f"{name} = {spec}" for name, spec in pairs))]


def write_reports(report: dict[str, Any], options: Any, here: Path, *, step_summary: bool = True) -> list[str]:
    """Write every output the option values (``miniature_report``, ``miniature_html``, ...) ask for; one line each.
    The Markdown summary is also appended to ``$GITHUB_STEP_SUMMARY`` when that is set and ``step_summary``.

    An output that cannot be written says why in its line and does not stop the others: the
    verdict is already decided, and the work behind it must not be lost.
    """
    from .baseline import baseline_lines
    from .json_report import read_json, write_json
    from .markdown import markdown_summary

    lines = []
    get = lambda name: getattr(options, f"miniature_{name}", None)  # noqa: E731
    if get("compare_baseline"):
        source = here / get("compare_baseline")
        try:
            lines += baseline_lines(report["results"], read_json(source), str(source))
        except MiniatureError as exc:
            lines.append(f"baseline not compared: {exc}")
    for option, what in (("report", "JSON report"), ("save_baseline", "baseline saved")):
        if get(option):
            lines.append(_written(what, lambda option=option: write_json(report, here / get(option))))
    if get("html"):
        from .html import write_html

        lines.append(_written("HTML report", lambda: write_html(report["results"], here / get("html"), report=report)))
    errors = report.get("errors") or []
    markdown = markdown_summary(report["results"], legend=legend(report.get("models") or {}), errors=errors) \
        if report["results"] or errors else None
    if markdown and get("markdown"):
        lines.append(_written("Markdown summary", lambda: _write_text(here / get("markdown"), markdown)))
    target = os.environ.get("GITHUB_STEP_SUMMARY") if step_summary else None
    if markdown and target:
        lines.append(_written("Markdown summary appended to $GITHUB_STEP_SUMMARY", lambda: _append(Path(target), markdown)))
    return lines


def _append(path: Path, text: str) -> str:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return f"({path})"


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _written(what: str, write: Any) -> str:
    try:
        return f"{what}: {write()}"
    except (MiniatureError, OSError) as exc:
        return f"{what} not written: {type(exc).__name__}: {exc}"
