"""The summary as GitHub-flavoured Markdown, for $GITHUB_STEP_SUMMARY and pull-request comments."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from .terminal import notes, plain, printable, sections


def _cell(value: Any) -> str:
    """A table cell: HTML escaped (GitHub renders HTML in Markdown: a model named ``<img onerror=...>``
    must stay text), pipes escaped, control characters shown."""
    return html.escape(printable(value)).replace("|", "\\|")


def markdown_summary(results: Sequence[Any], *, title: str = "pytest-miniature", legend: Sequence[str] = ()) -> str:
    """The verdict first (which gates failed), one table per characteristic, then the notes and the models'
    specs (``legend``) collapsed in a ``<details>`` block."""
    results = [plain(r) for r in results]
    lines = [f"## {_cell(title)}", ""]
    gated = [r for r in results if r.get("threshold") is not None]
    failed = [r for r in gated if not r["passed"]]
    if gated:
        verdict = "all gates passed" if not failed else f"{len(failed)} of {len(gated)} gates failed"
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
