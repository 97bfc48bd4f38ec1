"""A candidate's ``miniature-manifest.json``: how a recipe made it, read back by the backends and by the gate.

The recipes (:mod:`miniature.compress`, :mod:`miniature.tune`) write it beside the model; the HF backend reads
what to do on load, the report shows a tuned candidate's tuning, and a gate warns when it measures a tuned
candidate on the texts it was tuned on (a gate on its own tuning data is a gate it was fitted to pass).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MANIFEST = "miniature-manifest.json"
#: Sensitivity rows a report keeps (the manifest holds them all).
REPORTED_LAYERS = 10


def read_manifest(location: str | Path) -> dict[str, Any]:
    """The manifest beside a model (a directory, or a file such as an ONNX graph); {} when there is none.

    A manifest that cannot be read is a ``ValueError`` naming it, never {}: it may say how the model must be
    loaded (a torch-int8 candidate quantizes on load), and reading it as absent would gate another model."""
    location = Path(location)
    path = (location if location.is_dir() else location.parent) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds {type(manifest).__name__}, not a JSON object")
    return manifest


def text_digests(texts: Iterable[str]) -> list[str]:
    """Short digests of texts (12 hex digits of SHA-256 each), sorted and unique: what a manifest records of the
    tuning data, enough to recognise its texts in another file, in any order or format."""
    return sorted({hashlib.sha256(t.encode("utf-8")).hexdigest()[:12] for t in texts})


def tuning_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What a report shows of a tuned candidate's manifest: the gates, the layers kept in float, the trials and
    the most harmful layers; None for a candidate that was not tuned."""
    tuning = manifest.get("tuning")
    if not isinstance(tuning, dict):
        return None
    return {"recipe": tuning.get("recipe"), "found": tuning.get("found"), "thresholds": tuning.get("thresholds"),
            "gate": tuning.get("gate"), "sensitivity_by": tuning.get("sensitivity_by"),
            "layers": tuning.get("layers"), "float_layers": tuning.get("float_layers"),
            "trials": len(tuning.get("trials") or []), "sensitivity": (tuning.get("sensitivity") or [])[:REPORTED_LAYERS],
            "models": tuning.get("models"), "tune_data": (tuning.get("tune_data") or {}).get("spec")}


def tuned_on(manifest: dict[str, Any], texts: Iterable[str]) -> int:
    """How many of ``texts`` were in the data the candidate was tuned on (0 for a candidate that was not tuned)."""
    tuning = manifest.get("tuning")
    digests = set((tuning.get("tune_data") or {}).get("text_digests") or []) if isinstance(tuning, dict) else set()
    return sum(d in digests for d in text_digests(texts)) if digests else 0
