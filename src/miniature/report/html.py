"""A self-contained HTML report: the tables, and the paper's Figure 1 (agreement against K) as PNG plots.

Plots are drawn with matplotlib (the ``html`` extra) into ``<name>_files/`` beside the page.
Works from a live run or a saved JSON report.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from .terminal import notes, plain, printable, sections


def figures() -> list[tuple[str, str, str, str]]:
    """(metric, file name, title, x-axis) of each characteristic that draws the paper's Figure 1 sweep."""
    from ..characteristics import registry

    out = []
    for name, characteristic in registry.characteristics().items():
        if characteristic.figure is not None:
            out.append((name, *characteristic.figure))
    return out


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("The HTML report draws its plots with matplotlib: pip install 'pytest-miniature[html]'") from exc
    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt

    return plt


def _plot(results: Sequence[dict[str, Any]], metric: str, title: str, axis: str, path: Path) -> bool:
    chosen = [r for r in results if r["metric"] == metric and r.get("sweep")]
    if not chosen:
        return False
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for r in chosen:
        sweep = {int(k): (v[0] if isinstance(v, (list, tuple)) else v) for k, v in r["sweep"].items()}
        ks = sorted(sweep)
        label = f"{r['reference']} vs {r['candidate']}" + (f" ({r['pooling']})" if r.get("pooling") else "")
        label = printable(label).replace("$", r"\$")  # names are text, never control codes or matplotlib mathtext
        ax.plot(ks, [sweep[k] for k in ks], marker="o", label=label)
    ax.set(title=title, xlabel=axis, ylabel="Jaccard", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def write_html(results: Sequence[Any], path: str | os.PathLike[str], *, report: dict[str, Any] | None = None) -> Path:
    """Write the page and its plots; return the page's path."""
    path = Path(path)
    every = [plain(r) for r in results]
    results = [r for r in every if r.get("status", "ok") == "ok"]
    assets = path.with_name(path.stem + "_files")
    assets.mkdir(parents=True, exist_ok=True)
    body = ["<h1>pytest-miniature</h1>"]
    if report is not None:
        # Every value from a report file is escaped: a crafted report must not put markup in the page.
        verdict, created = (html.escape(str(report.get(k))) for k in ("verdict", "created"))
        failed, total = (html.escape(str(report.get("gates", {}).get(k))) for k in ("failed", "total"))
        body.append(f"<p><b>{verdict.upper()}</b>: {failed} of {total} gates failed. Created {created}.</p>")
    for title, headers, rows in sections(results):
        body.append(f"<h2>{html.escape(title.rstrip(':'))}</h2><table><tr>"
                    + "".join(f"<th>{html.escape(str(h))}</th>" for h in headers) + "</tr>")
        for row in rows:
            css = ' class="fail"' if str(row[-1]).startswith("FAIL") else ""
            body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
        body.append("</table>")
    for metric, name, title, axis in figures():
        if _plot(results, metric, title, axis, assets / name):
            body.append(f'<h2>{html.escape(title)}</h2><img src="{assets.name}/{name}" alt="{html.escape(title)}">')
    body += [f"<p><i>{html.escape(line)}</i></p>" for line in notes(every)]
    if report is not None:
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        body.append(f"<p><small>{html.escape(versions)}</small></p>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}tr.fail td{background:#fde2e2}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>pytest-miniature report</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    return path
