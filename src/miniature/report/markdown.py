"""The summary as GitHub-flavoured Markdown, for $GITHUB_STEP_SUMMARY and pull-request comments."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from .terminal import error_title, notes, plain, printable, sections


def _cell(value: Any) -> str:
    """A table cell: HTML escaped (GitHub renders HTML in Markdown: a model named ``<img onerror=...>``
    must stay text), pipes escaped, control characters shown."""
    return html.escape(printable(value)).replace("|", "\\|")


def markdown_summary(results: Sequence[Any], *, title: str = "pytest-miniature", legend: Sequence[str] = (),
                     errors: Sequence[dict[str, Any]] = ()) -> str:
    """The verdict first (the errors that ended the run, which gates failed), one table per characteristic, then
    the notes and the models' specs (``legend``) collapsed in a ``<details>`` block."""
    results = [plain(r) for r in results]
    lines = [f"## {_cell(title)}", ""]
    if errors:
        lines += ["**the run ended in an error**: what follows is what ran before it", "",
                  "| where | kind | error |", "|---|---|---|",
                  *(f"| {_cell(error_title(e))} | {_cell(e['kind'])} | {_cell(e['message'])} |" for e in errors), ""]
    gated = [r for r in results if r.get("threshold") is not None]
    failed = [r for r in gated if not r["passed"]]
    if gated:
        verdict = f"{len(failed)} of {len(gated)} gates failed" if failed else \
            f"all {len(gated)} gates that ran passed" if errors else "all gates passed"
        lines += [f"**{verdict}**" + ("" if not failed else ": " + ", ".join(
            f"`{_cell(r['metric'])}` {_cell(r['candidate'])}" for r in failed)), ""]
    for heading, headers, rows in sections(results):
        lines += [f"### {_cell(heading.rstrip(':'))}", "", "| " + " | ".join(map(_cell, headers)) + " |",
                  "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        lines.append("")
    details = [*legend, *notes(results)]
    if details:
        lines += ["<details><summary>models, settings and notes</summary>", "",
                  *(f"- {_cell(line)}" for line in details), "", "</details>"]
    return "\n".join(lines).rstrip() + "\n"
