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
    "GateFailure": "errors",
    "Characteristic": "characteristics", "Result": "characteristics", "Threshold": "characteristics",
    "Verdict": "characteristics", "NotApplicable": "errors",
    "KnnAgreement": "characteristics", "OodAgreement": "characteristics",
    "ErrorJaccard": "characteristics", "compare_errors": "characteristics", "error_set": "characteristics",
    "jaccard": "characteristics", "negative_flip_rate": "characteristics",
    "Settings": "config", "AttackSettings": "config", "load_settings": "config",
    "EvalSet": "data",
    "CacheWarning": "errors", "DatasetError": "errors", "EngineError": "errors", "LabelMismatchError": "errors",
    "MiniatureError": "errors",
    "MissingExtraError": "errors", "ModelLoadError": "errors", "UsageError": "errors",
    "ModelOutputs": "outputs",
    "Model": "session", "Runner": "session", "Session": "session",
}


def _check_module(name: str) -> str | None:
    """The module of a built-in characteristic's check function ``name`` or its ``assert_name`` helper."""
    from .characteristics.registry import BUILTINS

    target = BUILTINS.get(name.removeprefix("assert_"))
    return target.partition(":")[0] if target else None


def _checks() -> list[str]:
    from .characteristics.registry import BUILTINS

    return [f for name in BUILTINS for f in (name, f"assert_{name}")]


__all__ = sorted([*_EXPORTS, *_checks()])


def __getattr__(name: str) -> Any:
    # Not cached in globals(): a tool that unloads modules (pytester's in-process runs do)
    # must get the class the live module defines, or isinstance checks break.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    module = _check_module(name)
    if module is not None:
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'miniature' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
