"""The HTML report: one self-contained file a release engineer reads top to bottom.

First the verdict per candidate (ship or not, which gates failed and by how much); then what
each model is (spec, size, measured throughput, fingerprint); the tables of every
characteristic; the paper's Table 2 for every pair; for each failed gate of a characteristic that
lists them, the examples that differ most, with their text; the Figure 1 sweeps as inline SVG (matplotlib, the ``html``
extra); settings, notes and versions. No external resource: the page is one file. Works from a
live run or a saved JSON report; every string from a model, data set or report file is escaped.
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MissingExtraError
from .terminal import error_title, matrix_rows, notes, plain, printable, sections

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1400px}
h1{margin:0 0 .3em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr.fail td,table.errors td{background:#fde2e2}
.badge{display:inline-block;padding:.2em .7em;border-radius:4px;font-weight:bold;color:#fff}
.pass{background:#1a7f37}.fail{background:#c62828}.none{background:#777}
.verdict td:first-child{font-weight:bold}.small{color:#666;font-size:12px}
.text{max-width:520px}figure{margin:0;display:inline-block}
"""


def _e(value: Any) -> str:
    return html.escape(printable(value))


def _table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *, fail_column: int | None = None,
           classes: str = "") -> str:
    out = [f'<table class="{classes}"><tr>' + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"]
    for row in rows:
        failed = fail_column is not None and str(row[fail_column]).startswith(("FAIL", "DO NOT SHIP"))
        css = ' class="fail"' if failed else ""
        out.append(f"<tr{css}>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    return "".join(out) + "</table>"


def _bound(metric: str) -> str:
    from ..characteristics import registry

    try:
        return registry.get(metric).bound
    except Exception:  # a characteristic this installation lacks: agreements are the rule
        return "min"


def _gate_text(r: dict[str, Any]) -> str:
    """``<metric> 0.4342 < min 0.5 (short by 0.0658)``: what failed, and by how much."""
    bound = _bound(r["metric"])
    lower = r.get("gate_mode") == "lower" and r.get("interval")
    compared = r.get("compared", r["interval"][1 if bound == "max" else 0] if lower else r.get("value"))
    if compared is None:
        return f"{r['metric']}: no value"
    miss = compared - r["threshold"]
    what = "interval's upper end" if lower and bound == "max" else "interval's lower end" if lower else ""
    sign = ">" if bound == "max" else "<"
    return (f"{r['metric']} {what + ' ' if what else ''}{compared:.4f} {sign} {bound} {r['threshold']:g} "
            f"({'over' if bound == 'max' else 'short'} by {abs(miss):.4f})")


def verdicts(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per candidate: its verdict, the gates it failed and by how much, the gates passed, what did not apply."""
    rows = []
    for candidate in dict.fromkeys(r["candidate"] for r in results):
        mine = [r for r in results if r["candidate"] == candidate]
        gated = [r for r in mine if r.get("threshold") is not None]
        failed = [r for r in gated if not r["passed"]]
        skipped = sorted({r["metric"] for r in mine if r.get("status") == "not_applicable"})
        verdict = "no gates" if not gated else "DO NOT SHIP" if failed else "SHIP"
        rows.append([candidate, verdict, "; ".join(map(_gate_text, failed)) or "-",
                     f"{len(gated) - len(failed)} of {len(gated)}", ", ".join(skipped) or "-"])
    return rows


def computed_by(how: dict[str, Any]) -> str:
    """``{"engine": "ray", "actors": 2}`` in words."""
    engine = how.get("engine")
    if engine == "ray":
        return f"on Ray, {how.get('actors', '?')} actors"
    return {"local": "in the run's own process", "cache": "read from the cache (no model ran)"}.get(engine, str(engine))


def _models(report: dict[str, Any]) -> str:
    rows = []
    for name, m in report.get("models", {}).items():
        parameters = m.get("parameters")
        rows.append([name, m.get("location") or m.get("spec"), "-" if m.get("megabytes") is None else f"{m['megabytes']:.1f}",
                     "-" if parameters is None else f"{parameters / 1e6:.2f} M",
                     "-" if m.get("points_per_second") is None else f"{m['points_per_second']:.1f}",
                     _runtime(m), (m.get("fingerprint") or "-")[:12]])
    platform = report.get("platform", {})
    device = f"{platform.get('cpu') or platform.get('machine', '?')}, {platform.get('cpus', '?')} cores"
    return (_table(["model", "spec", "MB on disk", "parameters", "points/s this run", "runtime", "fingerprint"], rows)
            + f'<p class="small">points/s: forward passes this run on {_e(device)}; "-" when its outputs came '
              f"from the cache. Sizes are the weight files on disk (a torch-int8 candidate quantizes on load).</p>")


def _runtime(model: dict[str, Any]) -> str:
    """What ran the model: a GGUF's llama.cpp, its file type, tensor types and tokens/s; else the provider or dtype."""
    gguf = model.get("gguf")
    if gguf:
        types = ", ".join(f"{k} \u00d7{v}" for k, v in (gguf.get("tensor_types") or {}).items())
        rate = gguf.get("tokens_per_second")
        return (f"{model.get('provider') or 'llama.cpp'}: {gguf.get('file_type')} ({types})"
                + (f", {rate:,.0f} tokens/s" if rate is not None else ""))
    return str(model.get("provider") or model.get("dtype") or "-")


def _tunings(report: dict[str, Any]) -> str:
    """For each tuned candidate (``miniature compress tune``): the gates it was tuned to, the layers it keeps in
    float, the most harmful layers, and the plain, tuned and float models' speed and size on the tuning data."""
    out = []
    for name, m in report.get("models", {}).items():
        tuning = m.get("tuning")
        if not tuning:
            continue
        metrics = list(tuning.get("thresholds") or {})
        gates = ", ".join(f"{k} {_bound(k)} {v:g}" for k, v in (tuning.get("thresholds") or {}).items())
        kept = tuning.get("float_layers") or []
        out.append(f"<h3>{_e(name)}</h3><p>{_e(tuning.get('recipe'))} tuned on {_e(tuning.get('tune_data'))} to "
                   f"{_e(gates)}: {'every gate held' if tuning.get('found') else 'no variant met every gate'} on the "
                   f"tuning data with {len(kept)} of {_e(tuning.get('layers'))} layers in float "
                   f"({_e(tuning.get('trials'))} trials).</p>")
        rows = [[row.get("layer"), "yes" if row.get("layer") in kept else "", f"{row.get('score', 0):.3f}",
                 *(f"{(row.get('drift') or {}).get(k, float('nan')):+.4g}" for k in metrics)]
                for row in tuning.get("sensitivity") or []]
        if rows:
            alone = "quantized alone" if tuning.get("sensitivity_by") == "quantize-alone" else "alone in float"
            out.append(_table(["layer (most harmful first)", "kept in float", "score",
                               *(f"{k} change, layer {alone}" for k in metrics)], rows))
        models = tuning.get("models") or {}
        if models:
            out.append(_table(["model", "points/s on the tuning data", "MB"],
                              [[label, f"{v['points_per_second']:.1f}", f"{v['bytes'] / 1e6:.2f}"] for label, v in models.items()]))
    return "".join(out)


def _matrices(report: dict[str, Any]) -> str:
    out = []
    for metric, matrix in (report.get("matrices") or {}).items():
        if "pairs" not in matrix:
            continue
        values = {(p["a"], p["b"]): p["value"] for p in matrix["pairs"]}
        out.append(f"<h3>{_e(matrix['title'].split(' (')[0])} ({_e(metric)})</h3>"
                   + _table(*matrix_rows(matrix["models"], values)))
    return "".join(out)


def _examples(results: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in results:
        if r.get("threshold") is None or r["passed"] or not r.get("examples"):
            continue
        headers = list(r["examples"][0])
        out.append(f"<h3>{_e(r['candidate'])}: {_e(_gate_text(r))}</h3>"
                   + _table(headers, [[row.get(h, "") for h in headers] for row in r["examples"]], classes="text"))
    return "".join(out)


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("The HTML report draws its plots with matplotlib: pip install 'pytest-miniature[html]'") from exc
    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt

    return plt


def figures() -> list[tuple[str, str, str]]:
    """(metric, title, x-axis) of each characteristic that draws the paper's Figure 1 sweep."""
    from ..characteristics import registry

    return [(name, *c.figure) for name, c in registry.characteristics().items() if c.figure is not None]


def _svg(results: Sequence[dict[str, Any]], metric: str, title: str, axis: str) -> str | None:
    """The sweep of every pair as an inline SVG: short names in a legend under the axes, so long names never
    squeeze the plot or get cut."""
    chosen = [r for r in results if r["metric"] == metric and r.get("sweep")]
    if not chosen:
        return None
    plt = _pyplot()
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small and searchable
    figure, ax = plt.subplots(figsize=(6.4, 3.6 + 0.22 * len(chosen)), dpi=100)
    for r in chosen:
        sweep = {int(k): (v[0] if isinstance(v, (list, tuple)) else v) for k, v in r["sweep"].items()}
        ks = sorted(sweep)
        label = f"{r['reference']} vs {r['candidate']}" + (f" ({r['pooling']})" if r.get("pooling") else "")
        label = printable(label).replace("$", r"\$")  # names are text, never control codes or matplotlib mathtext
        ax.plot(ks, [sweep[k] for k in ks], marker="o", label=label[:60])
    ax.set(xlabel=axis, ylabel="Jaccard", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # inline: no XML prolog


def write_html(results: Sequence[Any], path: str | os.PathLike[str], *, report: dict[str, Any] | None = None) -> Path:
    """Write the self-contained page; return its path."""
    path = Path(path)
    every = [plain(r) for r in results]
    measured = [r for r in every if r.get("status", "ok") == "ok"]
    report = report or {}
    gates = report.get("gates") or {}
    errors = report.get("errors") or []
    overall = "error" if errors else str(report.get("verdict", "")).lower()
    badge = {"pass": "pass", "fail": "fail", "error": "fail"}.get(overall, "none")
    body = [f'<h1>pytest-miniature release gate <span class="badge {badge}">{_e(overall.upper() or "-")}</span></h1>',
            f"<p>{_e(gates.get('failed', '?'))} of {_e(gates.get('total', '?'))} gates failed. "
            f"Created {_e(report.get('created', '-'))}.</p>"]
    if errors:  # first: whatever the tables below say, the run did not finish
        body += ["<h2>The run ended in an error</h2>",
                 _table(["where", "kind", "error"], [[error_title(e), e["kind"], e["message"]] for e in errors],
                        classes="errors"),
                 '<p class="small">The tables below hold what ran before the error.</p>']
    body += ["<h2>Verdict per candidate</h2>", _table(["candidate", "verdict", "failed gates", "gates passed",
                                                       "not applicable"], verdicts(every), fail_column=1, classes="verdict")]
    if report.get("models"):
        body += ["<h2>Models</h2>", _models(report)]
        if tunings := _tunings(report):
            body += ["<h2>Tuned candidates: which layers caused the drift</h2>", tunings]
    if report.get("warnings"):
        body += ["<h2>Warnings</h2>", *(f"<p>{_e(w)}</p>" for w in report["warnings"])]
    for title, headers, rows in sections(every):
        body += [f"<h2>{_e(title.rstrip(':'))}</h2>", _table(headers, rows, fail_column=len(headers) - 1)]
    if report.get("matrices"):
        body += ["<h2>All pairs (the paper's Table 2)</h2>", _matrices(report)]
    examples = _examples(every)
    if examples:
        body += ["<h2>Failed gates: the examples that differ most</h2>", examples]
    plots = [(title, svg) for metric, title, axis in figures() if (svg := _svg(measured, metric, title, axis))]
    if plots:
        body += ["<h2>The paper's Figure 1: agreement against K</h2>",
                 *(f"<figure>{svg}<figcaption>{_e(title)}</figcaption></figure>" for title, svg in plots)]
    computed = [[r["metric"], r["candidate"], r["dataset"], computed_by(r["computed_by"])] for r in measured
                if r.get("computed_by")]
    if computed:
        body += ["<h2>Where each result was computed</h2>",
                 _table(["check", "candidate", "data", "its outputs were computed"], computed)]
    settings = report.get("settings") or {}
    body += ["<h2>Settings and notes</h2>",
             _table(["setting", "value"], [[k, settings[k]] for k in ("thresholds", "checks", "gate", "eval", "train", "ood",
                                                                       "batch_size", "max_length") if k in settings]),
             *(f'<p class="small">{_e(line)}</p>' for line in notes(every))]
    if report.get("versions"):
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        body.append(f'<p class="small">{_e(versions)}; platform {_e(report.get("platform", {}))}</p>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>pytest-miniature report</title>"
                    f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n", encoding="utf-8")
    return path
