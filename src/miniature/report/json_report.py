"""The JSON report: every result, interval, threshold and verdict, with what produced them.

Schema ``pytest-miniature/report`` version 1 (docs/report-schema.md); ``status``/``reason`` per
result, ``matrices`` and ``errors`` are optional fields added within version 1. Per-point arrays
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
from .schema import DROPPED, check_report

SCHEMA = "pytest-miniature/report"
VERSION = 1
_LIBRARIES = ("pytest-miniature", "pytest", "numpy", "torch", "transformers", "onnxruntime", "faiss-cpu", "datasets", "textattack")
_MAX_IDS = 100


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


#: The vector instructions int8 kernels choose between: int8 results differ between CPUs that have different ones.
_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16", "amx_tile", "neon",
                 "asimd", "asimddp", "i8mm")


def cpu() -> dict[str, Any]:
    """The CPU's model and its vector-instruction flags (Linux: /proc/cpuinfo), for int8 figures' provenance."""
    model, flags = platform.processor() or None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and model in (None, "", platform.machine()):
                    model = value.strip()
                elif key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": [f for f in _VECTOR_FLAGS if f in flags]}


def trim(value: Any) -> Any:
    """A result's ``as_dict()`` as the report stores it: per-point arrays dropped, id lists cut."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in DROPPED:
                continue
            if isinstance(key, str) and (key.endswith("_ids") or key == "flagged") and isinstance(item, list):  # id lists, cut
                out[f"{key}_count"] = len(item)
                item = item[:_MAX_IDS]
            out[key] = trim(item)
        return out
    if isinstance(value, (list, tuple)):
        return [trim(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def build_report(session: Any, *, exit_status: int | None = None, matrices: dict[str, Any] | None = None,
                 examples: dict[tuple, list[dict[str, str]]] | None = None) -> dict[str, Any]:
    """The report of everything ``session`` computed, as plain JSON-ready data."""
    from ..characteristics.base import Threshold

    settings = session.settings
    engine = getattr(session, "engine", session)
    plain_settings = {
        f.name: getattr(settings, f.name) for f in dataclasses.fields(settings) if f.name not in ("models", "base_dir")
    }
    plain_settings["thresholds"] = {k: _threshold(k, v) if isinstance(v, Threshold) else v
                                    for k, v in settings.thresholds.items()}
    plain_settings["attack"] = dataclasses.asdict(settings.attack)
    for key in ("reference", "eval", "train", "validation", "ood", "attack_set", "cache_dir"):
        if plain_settings.get(key) is not None:
            plain_settings[key] = getattr(plain_settings[key], "text", str(plain_settings[key]))
    plain_settings["candidates"] = [getattr(c, "text", c) for c in settings.candidates]
    models = {
        model.name: {"spec": model.spec.text, "backend": model.spec.backend, "location": model.spec.location,
                     "fingerprint": engine.known_fingerprint(model),
                     "trust_remote_code": engine.trusts_remote_code(model), **engine.measures(model),
                     **({"tuning": tuning} if (tuning := _tuning(model)) else {})}
        for model in session.known_models
    }
    datasets = {name: {"n": len(data), "fingerprint": data.fingerprint, "labelled": data.labels is not None}
                for name, data in engine.datasets_used.items()}
    results = [trim({**e.as_dict(), **({"examples": examples[e.identity]} if e.identity in (examples or {}) else {})})
               for e in session.ledger.entries]
    stats = engine.stats
    return _with_verdict({
        "schema": SCHEMA,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "exit_status": exit_status,
        "settings": plain_settings,
        "versions": _versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(), "cpus": os.cpu_count(),
                     "executable": sys.executable, **cpu()},
        "models": models,
        "datasets": datasets,
        "outputs": {"computed": stats.computed, "from_cache": stats.from_disk,
                    "seconds_computing": round(stats.seconds_computing, 3),
                    "attacked": stats.attacked, "attacks_from_cache": stats.attacks_from_cache,
                    "seconds_attacking": round(stats.seconds_attacking, 3)},
        "results": results,
        "errors": list(getattr(session, "errors", [])),
        "warnings": tuning_warnings(session),
        "matrices": trim(matrices or {}),
    })


def _tuning(model: Any) -> dict[str, Any] | None:
    """A tuned candidate's tuning, from its manifest (None for any other model, or one whose manifest is unreadable:
    the backend has refused that one already, if loading needed it)."""
    from ..manifest import read_manifest, tuning_of

    if not model.spec.is_local:
        return None
    try:
        return tuning_of(read_manifest(model.spec.location))
    except ValueError:
        return None


def tuning_warnings(session: Any) -> list[str]:
    """A warning for each tuned candidate this run measured on texts it was tuned on: a gate on the tuning data
    is a gate the candidate was fitted to pass, and says little about held-out data."""
    from ..manifest import read_manifest, tuned_on

    models = {m.name: m for m in session.known_models}
    warnings = []
    for entry in session.ledger.entries:
        model = models.get(entry.candidate)
        if model is None or not model.spec.is_local:
            continue
        try:
            manifest = read_manifest(model.spec.location)
        except ValueError:
            continue
        for data in {d.name: d for d in entry.data.values() if d is not None}.values():
            overlap = tuned_on(manifest, data.texts)
            line = (f"{entry.candidate} was tuned (miniature compress tune) on {overlap} of the {len(data)} texts of "
                    f"{data.name!r}, which gates it here: gate it on held-out data")
            if overlap and line not in warnings:
                warnings.append(line)
    return warnings


def _threshold(name: str, threshold: Any) -> dict[str, Any]:
    from ..characteristics import registry

    return {registry.get(name).bound_key: threshold.value, **threshold.params}


def _with_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its ``verdict`` and ``gates`` counted from its results: a run that ended in an error
    (``errors``) did not pass, whatever its gates say."""
    gated = [r for r in report["results"] if r.get("threshold") is not None]
    failed = sum(not r["passed"] for r in gated)
    passed = not failed and not report.get("errors")
    return {**report, "verdict": "pass" if passed else "fail", "gates": {"total": len(gated), "failed": failed}}


def merge_reports(reports: list[dict[str, Any]], *, exit_status: int | None = None) -> dict[str, Any]:
    """One report from the reports of several processes of one run (pytest-xdist's workers)."""
    from ..characteristics.registry import identity_of

    merged = dict(reports[0])
    merged.update(models={}, datasets={}, results=[], errors=[], warnings=[], matrices={}, exit_status=exit_status,
                  outputs={"computed": 0, "from_cache": 0, "seconds_computing": 0.0,
                           "attacked": 0, "attacks_from_cache": 0, "seconds_attacking": 0.0})
    seen = set()
    for report in reports:
        merged["models"].update(report["models"])
        merged["datasets"].update(report["datasets"])
        for key in merged["outputs"]:
            merged["outputs"][key] += report["outputs"].get(key, 0)
        for result in report["results"]:
            if identity_of(result) not in seen:
                seen.add(identity_of(result))
                merged["results"].append(result)
        merged["errors"] += [e for e in report.get("errors", []) if e not in merged["errors"]]
        merged["warnings"] += [w for w in report.get("warnings", []) if w not in merged["warnings"]]
    return _with_verdict(merged)


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

    return check_report(report, str(path))
