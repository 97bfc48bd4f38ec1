"""The JSON report: every result, interval, threshold and verdict, with what produced them.

Schema ``pytest-miniature/report`` version 1 (docs/report-schema.md). Per-point arrays
(``per_point``, detector ``scores``) are left out; id lists are cut to their first 100
entries, with the full count beside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ..atomic import write_atomic

SCHEMA = "pytest-miniature/report"
VERSION = 1
_LIBRARIES = ("pytest-miniature", "pytest", "numpy", "torch", "transformers", "onnxruntime", "faiss-cpu", "datasets", "textattack")
_DROPPED = {"per_point", "scores"}
_ID_LISTS = {"differing_ids", "lowest_ids", "flagged", "candidate_only_ids"}
_MAX_IDS = 100


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def trim(value: Any) -> Any:
    """A result's ``as_dict()`` as the report stores it: per-point arrays dropped, id lists cut."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _DROPPED:
                continue
            if key in _ID_LISTS and isinstance(item, list):
                out[f"{key}_count"] = len(item)
                item = item[:_MAX_IDS]
            out[key] = trim(item)
        return out
    if isinstance(value, (list, tuple)):
        return [trim(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def build_report(runner: Any, *, exit_status: int | None = None) -> dict[str, Any]:
    """The report of everything ``runner`` computed, as plain JSON-ready data."""
    settings = runner.settings
    plain_settings = {
        f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in ("models", "base_dir")
    }
    plain_settings["thresholds"] = {k: dataclasses.asdict(v) for k, v in settings.thresholds.items()}
    plain_settings["attack"] = dataclasses.asdict(settings.attack)
    for key in ("reference", "eval", "train", "validation", "ood", "attack_set", "cache_dir"):
        if plain_settings.get(key) is not None:
            plain_settings[key] = getattr(plain_settings[key], "text", str(plain_settings[key]))
    plain_settings["candidates"] = [getattr(c, "text", c) for c in settings.candidates]
    models = {
        name: {"spec": model.spec.text, "backend": model.spec.backend, "location": model.spec.location,
               "fingerprint": runner.fingerprints.get(name)}
        for name, model in ((m.name, m) for m in runner.known_models)
    }
    datasets = {name: {"n": len(data), "fingerprint": data.fingerprint, "labelled": data.labels is not None}
                for name, data in runner.datasets_used.items()}
    results = [trim(r.as_dict()) for r in runner.results]
    gated = [r for r in results if r.get("threshold") is not None]
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": "pass" if all(r["passed"] for r in gated) else "fail",
        "gates": {"total": len(gated), "failed": sum(not r["passed"] for r in gated)},
        "exit_status": exit_status,
        "settings": plain_settings,
        "versions": _versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "executable": sys.executable},
        "models": models,
        "datasets": datasets,
        "outputs": {"computed": runner.stats.computed, "from_cache": runner.stats.from_disk,
                    "seconds_computing": round(runner.stats.seconds_computing, 3),
                    "attacked": runner.stats.attacked, "attacks_from_cache": runner.stats.attacks_from_cache,
                    "seconds_attacking": round(runner.stats.seconds_attacking, 3)},
        "results": results,
    }


def merge_reports(reports: list[dict[str, Any]], *, exit_status: int | None = None) -> dict[str, Any]:
    """One report from the reports of several processes of one run (pytest-xdist's workers)."""
    merged = dict(reports[0])
    merged.update(models={}, datasets={}, results=[], exit_status=exit_status,
                  outputs={"computed": 0, "from_cache": 0, "seconds_computing": 0.0,
                           "attacked": 0, "attacks_from_cache": 0, "seconds_attacking": 0.0})
    seen = set()
    for report in reports:
        merged["models"].update(report["models"])
        merged["datasets"].update(report["datasets"])
        for key in merged["outputs"]:
            merged["outputs"][key] += report["outputs"].get(key, 0)
        for result in report["results"]:
            identity = (result["metric"], result["reference"], result["candidate"], result["dataset"],
                        result.get("pooling"), result.get("k"))
            if identity not in seen:
                seen.add(identity)
                merged["results"].append(result)
    gated = [r for r in merged["results"] if r.get("threshold") is not None]
    merged["gates"] = {"total": len(gated), "failed": sum(not r["passed"] for r in gated)}
    merged["verdict"] = "pass" if not merged["gates"]["failed"] else "fail"
    return merged


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``report`` atomically (write, then rename)."""
    return write_atomic(path, (json.dumps(report, indent=2, default=str) + "\n").encode())


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A saved report, checked to be one this version of the library can read."""
    from ..errors import UsageError

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"Could not read report {path}: {exc}") from exc
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise UsageError(f"{path} is not a pytest-miniature report (no \"schema\": \"{SCHEMA}\")")
    if report.get("version") != VERSION:
        raise UsageError(f"{path} is report version {report.get('version')!r}; this library reads version {VERSION}")
    return report
