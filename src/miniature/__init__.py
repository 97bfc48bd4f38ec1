"""pytest-miniature: is your compressed model still a miniature of its parent?

The library is usable without pytest; the plugin in ``pytest_miniature`` is a thin adapter.
Names are imported on first use (PEP 562), so ``import miniature`` costs almost nothing and
no ML framework loads until a model or dataset is first used: pytest loads the plugin in
every run of an environment that has it installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "assert_error_jaccard": "assertions", "assert_knn_agreement": "assertions", "assert_ood_agreement": "assertions",
    "assert_attack_robustness": "assertions", "GateFailure": "assertions",
    "KnnAgreement": "characteristics", "OodAgreement": "characteristics",
    "ErrorJaccard": "characteristics", "compare_errors": "characteristics", "error_set": "characteristics",
    "jaccard": "characteristics", "negative_flip_rate": "characteristics",
    "error_jaccard": "checks", "knn_agreement": "checks", "ood_agreement": "checks",
    "attack_robustness": "checks",
    "run_check": "gates",
    "Settings": "config", "Threshold": "config", "AttackSettings": "config", "load_settings": "config",
    "EvalSet": "data",
    "CacheWarning": "errors", "DatasetError": "errors", "LabelMismatchError": "errors", "MiniatureError": "errors",
    "MissingExtraError": "errors", "ModelLoadError": "errors", "UsageError": "errors",
    "ModelOutputs": "outputs",
    "Model": "runner", "Runner": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        # Not cached in globals(): a tool that unloads modules (pytester's in-process runs do)
        # must get the class the live module defines, or isinstance checks break.
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'miniature' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
