"""The model characteristics: one module each (the maths, the check, its assertion, how it renders),
listed by :mod:`.registry` alone.

Names load on first use (PEP 562): the registry must be importable without numpy, since the
pytest plugin and ``import miniature`` consult it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Characteristic": "base", "Param": "base", "Result": "base", "Threshold": "base", "Verdict": "base",
    "NotApplicable": "base",
    "OodAgreement": "distribution", "OodDetection": "distribution", "auroc": "distribution", "compare_ood": "distribution",
    "detect_ood": "distribution", "fpr_at_tpr": "distribution", "flag": "distribution", "tpr_threshold": "distribution",
    "kth_neighbour_distances": "neighbours", "l2_normalise": "neighbours", "nearest_others": "neighbours",
    "ErrorJaccard": "prediction_errors", "compare_errors": "prediction_errors", "error_set": "prediction_errors",
    "jaccard": "prediction_errors", "negative_flip_rate": "prediction_errors",
    "KnnAgreement": "representation", "compare_neighbourhoods": "representation", "neighbour_jaccard": "representation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'miniature.characteristics' has no attribute {name!r}")
