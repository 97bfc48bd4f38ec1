"""Plain-text tables for the terminal summary and for assertion messages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plain(result: Any) -> dict[str, Any]:
    """A result as the JSON report stores it (results already in that form pass through)."""
    if isinstance(result, dict):
        return result
    from .json_report import trim

    return trim(result.as_dict())


def _verdict(r: dict[str, Any]) -> str:
    if r.get("threshold") is None:
        return ""
    bound = "lower bound" if r.get("gate_mode", "point") == "lower" else "min"
    return ("PASS" if r["passed"] else "FAIL") + f" ({bound} {r['threshold']:g})"


def _value(r: dict[str, Any]) -> str:
    interval = r.get("interval")
    text = f"{r['value']:.4f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
    return text + (" (both empty)" if r.get("both_empty") else "")


def _result_value(result: Any) -> str:
    """``_value`` of a live result, without converting it (and its per-point arrays) to a dict."""
    return _value({"value": float(result), "interval": result.interval, "both_empty": getattr(result, "both_empty", False)})


def _sweep(r: dict[str, Any]) -> str:
    sweep = r.get("sweep") or {}
    values = {int(k): (v[0] if isinstance(v, (list, tuple)) else v) for k, v in sweep.items()}
    return " ".join(f"{k}:{v:.3f}" for k, v in sorted(values.items()))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def error_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per pair: the prediction-error figures of the paper and beyond."""
    rows = [[
        r["reference"], r["candidate"], r["dataset"], r["n"], _value(r), f"{r['accuracy_reference']:.4f}",
        f"{r['accuracy_candidate']:.4f}", r["errors_reference"], r["errors_candidate"], r["errors_both"],
        "yes" if r["reference_subset"] else "no", f"{r['negative_flip_rate']:.4f}", _verdict(r),
    ] for r in results]
    headers = ["reference", "candidate", "eval", "n", "error Jaccard [95% CI]", "acc ref", "acc cand",
               "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "E_ref⊆E_cand", "neg. flip", "gate"]
    return headers, rows


def knn_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per pair: mean and variance of the per-point KNN Jaccard (Table 2), and the K sweep."""
    rows = [[r["reference"], r["candidate"], r["dataset"], r["n"], r["pooling"], r["k"], _value(r),
             f"{r['variance']:.4f}", _sweep(r), _verdict(r)] for r in results]
    return ["reference", "candidate", "eval", "n", "pooling", "K", "mean [95% CI]", "variance", "mean by K", "gate"], rows


def ood_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per pair: Jaccard of the OOD sets and each model's detector figures."""
    rows = []
    for r in results:
        ref, cand = r["reference_detection"], r["candidate_detection"]
        count = lambda d: d.get("flagged_count", len(d.get("flagged", [])))  # noqa: E731
        rows.append([
            r["reference"], r["candidate"], r["dataset"], r["n"], r["k"], _value(r),
            f"{ref['threshold']:.4f} / {cand['threshold']:.4f}",
            f"{count(ref)} ({count(ref) / ref['n']:.3f}) / {count(cand)} ({count(cand) / cand['n']:.3f})",
            f"{_rate(ref['auroc'])} / {_rate(cand['auroc'])}", f"{_rate(ref['fpr_at_tpr95'])} / {_rate(cand['fpr_at_tpr95'])}",
            _sweep(r), _verdict(r),
        ])
    headers = ["reference", "candidate", "challenge", "n", "k", "OOD Jaccard [95% CI]", "threshold ref/cand",
               "OOD count (rate) ref/cand", "AUROC ref/cand", "FPR@TPR95 ref/cand", "Jaccard by k", "gate"]
    return headers, rows


def _number(value: float | None, spec: str = ".4f", suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value:{spec}}{suffix}"


def attack_rows(results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The paper's Table 3: one row per target model (each reference once), then the pair figures."""
    rows, shown = [], set()

    def target(summary: dict[str, Any], dataset: str) -> list[Any]:
        return [summary["model"], dataset, summary["n"], _number(summary["original_accuracy"]),
                _number(summary["attacked_accuracy"]), _number(summary["absolute_change"]),
                _number(summary["percent_change"], ".2f"), _number(summary["success_rate"]),
                _number(summary["average_queries"], ".1f"), _number(summary["perturbed_word_share"], ".3f")]

    for r in results:
        ref = r["reference_summary"]
        if (ref["model"], r["dataset"]) not in shown:
            shown.add((ref["model"], r["dataset"]))
            rows.append([*target(ref, r["dataset"]), "(reference)", "", "", ""])
        interval = r.get("interval")
        gap = _number(r["value"], "+.2f") + (f" [{interval[0]:+.1f}, {interval[1]:+.1f}]" if interval else "")
        transfer = f"{_number(r['transfer_rate'], '.3f')} ({r['transferred']}/{r['transfer_tried']})"
        rows.append([*target(r["candidate_summary"], r["dataset"]), gap, _number(r["success_jaccard"]), transfer,
                     _attack_verdict(r)])
    headers = ["target", "attack set", "n", "orig. acc", "after attack", "abs. change", "% change", "success rate",
               "avg queries", "words changed", "gap vs ref [95% CI]", "success Jaccard", "transfer", "gate"]
    return headers, rows


def _attack_verdict(r: dict[str, Any]) -> str:
    if r.get("threshold") is None:
        return ""
    bound = "upper bound" if r.get("gate_mode", "point") == "lower" else "max gap"
    return ("PASS" if r["passed"] else "FAIL") + f" ({bound} {r['threshold']:g})"


SECTIONS = (
    ("error_jaccard", "prediction errors (paper section 3):", error_rows),
    ("knn_agreement", "data representation, per-point KNN Jaccard (paper section 4):", knn_rows),
    ("ood_agreement", "data distribution, Deep-NN OOD sets (paper section 5):", ood_rows),
    ("attack_robustness", "adversarial vulnerability, BERT-Attack (paper section 6, Table 3):", attack_rows),
)
#: The characteristics that are agreements between two models (an all-pairs matrix makes sense).
PAIRWISE = ("error_jaccard", "knn_agreement", "ood_agreement")


def sections(results: Sequence[Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) for each characteristic that has results, in the paper's order."""
    results = [plain(r) for r in results]
    out = []
    for metric, title, rows in SECTIONS:
        chosen = [r for r in results if r["metric"] == metric]
        if chosen:
            out.append((title, *rows(chosen)))
    return out


def notes(results: Sequence[Any]) -> list[str]:
    """Lines that qualify the tables: empty sets, where the OOD thresholds come from."""
    results = [plain(r) for r in results]
    lines = []
    if any(r.get("both_empty") for r in results):
        lines.append("(both empty): neither model had a point in its set; two empty sets have Jaccard 1.0")
    settings = {(r["bank"], r["validation"] or "", r["tpr"]) for r in results if r["metric"] == "ood_agreement"}
    for bank, validation, tpr in sorted(settings):
        kept = validation or f"held-out 10% of {bank}"
        lines.append(f"OOD bank: {bank}; threshold keeps {tpr:.0%} of: {kept}")
    for r in results:
        if r["metric"] == "error_jaccard" and r.get("task") == "question-answering":
            lines.append(
                f"extractive QA (SQuAD 2.0 rules): reference {r['reference']} EM {r['exact_match_reference']:.4f}, "
                f"F1 {r['f1_reference']:.4f}; {r['candidate']} EM {r['exact_match_candidate']:.4f}, "
                f"F1 {r['f1_candidate']:.4f} (on {r['dataset']}; an error is an answer matching no gold answer; "
                f"no-answer threshold {r['null_threshold']:g})"
            )
    attacks = {json.dumps(r["attack"], sort_keys=True) for r in results if r["metric"] == "attack_robustness"}
    for attack in sorted(attacks):
        lines.append(attack_note(json.loads(attack)))
    if any(r["metric"] == "attack_robustness" for r in results):
        lines.append("gap: candidate's % change minus the reference's (positive: more vulnerable); transfer: share of "
                     "the reference's adversarial examples that also fool the candidate")
    if any(r.get("interval") for r in results):
        lines.append("[95% CI]: seeded bootstrap over eval points (1,000 resamples)")
    return lines


def attack_note(attack: dict[str, Any]) -> str:
    """One line naming every setting of an attack (what Table 3's numbers depend on)."""
    limits = [f"max {attack['max_percent']:.0%} of words"] + ([f"max {attack['max_words']} words"] if attack.get("max_words") else [])
    similarity = (f"cosine >= {attack['similarity_threshold']:g} on {attack['similarity_model']}"
                  if attack.get("similarity_model") else "no sentence-similarity constraint")
    budget = f"{attack['query_budget']} queries/example" if attack.get("query_budget") else "unlimited queries"
    return (f"BERT-Attack (TextAttack {attack.get('textattack')}): masked LM {attack['model']}, K={attack['max_candidates']} "
            f"candidates/word, {', '.join(limits)}, {similarity}, {budget}")


def summary(results: Sequence[Any]) -> list[str]:
    """The lines of the terminal summary: one table per characteristic that has results."""
    lines: list[str] = []
    for title, headers, rows in sections(results):
        lines += [title, *table(headers, rows).splitlines()]
    return lines + (notes(results) if lines else [])


def failure_message(result: Any, threshold: float, *, examples: int = 10) -> str:
    """The message of a failed gate: metric, threshold, value with its interval, n and the most telling ids."""
    if result.metric == "error_jaccard":
        head = f"{result.candidate} does not make the errors {result.reference} makes on {result.dataset}"
        headers = ["metric", "threshold", "value", "n", "|E_ref|", "|E_cand|", "|E_ref∩E_cand|", "neg. flip"]
        row = [result.metric, f">= {threshold:g}", _result_value(result), result.n, result.errors_reference,
               result.errors_candidate, result.errors_both, f"{result.negative_flip_rate:.4f}"]
        ids, what = result.differing_ids, "ids wrong for exactly one model, largest change in gold-class probability first"
    elif result.metric == "knn_agreement":
        head = f"{result.candidate} does not see the neighbourhoods {result.reference} sees in {result.dataset}"
        headers = ["metric", "threshold", "value", "variance", "n", "K", "pooling"]
        row = [result.metric, f">= {threshold:g}", _result_value(result), f"{result.variance:.4f}", result.n, result.k, result.pooling]
        ids, what = result.lowest_ids, "ids whose neighbourhoods agree least"
    elif result.metric == "attack_robustness":
        ref, cand = result.reference_summary, result.candidate_summary
        head = (f"{result.candidate} loses {cand.percent_change:.1f}% of its accuracy to BERT-Attack on {result.dataset}, "
                f"{float(result):+.1f} points against {result.reference}'s {ref.percent_change:.1f}%")
        headers = ["metric", "max gap", "gap [95% CI]", "n", "acc ref before/after", "acc cand before/after", "transfer"]
        gap = f"{float(result):+.2f}" + (f" [{result.interval[0]:+.1f}, {result.interval[1]:+.1f}]" if result.interval else "")
        row = [result.metric, f"<= {threshold:g}", gap, result.n,
               f"{ref.original_accuracy:.3f}/{ref.attacked_accuracy:.3f}", f"{cand.original_accuracy:.3f}/{cand.attacked_accuracy:.3f}",
               _number(result.transfer_rate, ".3f")]
        ids, what = result.candidate_only_ids, "ids attacked successfully on the candidate only"
    else:
        ref, cand = result.reference_detection, result.candidate_detection
        head = f"{result.candidate} does not flag the out-of-distribution points {result.reference} flags in {result.dataset}"
        headers = ["metric", "threshold", "value", "n", "k", "|O_ref|", "|O_cand|", "|O_ref∩O_cand|"]
        row = [result.metric, f">= {threshold:g}", _result_value(result), result.n, result.k, len(ref.flagged),
               len(cand.flagged), len(ref.flagged & cand.flagged)]
        ids, what = result.differing_ids, "ids flagged by exactly one model"
    if getattr(result, "gate_mode", "point") == "lower" and result.interval is not None:
        upper = result.metric == "attack_robustness"  # a maximum is gated on the interval's upper end
        head += f" (the gate compares the interval's {'upper' if upper else 'lower'} end, {result.interval[int(upper)]:.4f})"
    shown = list(ids[:examples])
    more = len(ids) - len(shown)
    return "\n".join([
        head,
        table(headers, [row]),
        f"{what}: {', '.join(shown) or '(none)'}" + (f" (+{more} more)" if more > 0 else ""),
    ])


def matrix_table(names: Sequence[str], values: dict[tuple[str, str], float]) -> str:
    """An upper-triangular matrix of pair agreements, as Table 2 of the paper lists its pairs."""
    rows = [[a, *[f"{values[(a, b)]:.4f}" if (a, b) in values else ("-" if a == b else "") for b in names[1:]]]
            for a in names[:-1]]
    return table(["", *names[1:]], rows)
