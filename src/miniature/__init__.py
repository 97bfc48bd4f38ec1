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

#: Every public name, once: name -> the module that defines it (the check functions and their ``assert_*``
#: helpers are found through the characteristics' registry, below).
_EXPORTS = {
    # errors
    **dict.fromkeys(["CacheWarning", "DataWarning", "DatasetError", "EngineError", "GateFailure", "LabelMismatchError", "MiniatureError",
                     "MissingExtraError", "ModelLoadError", "NotApplicable", "UsageError"], "errors"),
    # running a gate
    "Session": "session", "Settings": "config", "load_settings": "config", "AttackSettings": "attack.settings",
    "EvalSet": "data", "ModelOutputs": "outputs",
    # what a characteristic receives and declares (docs/architecture.md)
    **dict.fromkeys(["Model", "Evidence", "Decisions", "PointDistributions", "PositionStatistics", "Continuations"],
                    "evidence"),
    **dict.fromkeys(["Characteristic", "Failure", "Param", "Result", "Threshold", "Verdict"], "characteristics.base"),
    **dict.fromkeys(["format_value", "number", "sweep_cell", "verdict_cell"], "characteristics.render"),
    "Task": "tasks.base",
    # the results, and the pure functions behind them
    **dict.fromkeys(["ErrorJaccard", "compare_errors", "error_set", "negative_flip_rate"], "characteristics.prediction_errors"),
    **dict.fromkeys(["KnnAgreement", "compare_neighbourhoods", "neighbour_jaccard"], "characteristics.representation"),
    **dict.fromkeys(["OodAgreement", "OodDetection", "auroc", "compare_ood", "detect_ood", "flag", "fpr_at_tpr",
                     "tpr_threshold"], "characteristics.distribution"),
    **dict.fromkeys(["kth_neighbour_distances", "l2_normalise", "nearest_others"], "characteristics.neighbours"),
    **dict.fromkeys(["AttackGap", "AttackOutcome", "compare_attacks", "summarize_attack"], "characteristics.adversarial"),
    **dict.fromkeys(["KlDivergence", "Top1Agreement", "compare_outputs"], "characteristics.output_agreement"),
    **dict.fromkeys(["GenerationAgreementResult", "compare_continuations", "first_divergence"],
                    "characteristics.generation"),
    **dict.fromkeys(["jaccard", "kl_from_logits", "kl_statistics", "log_softmax"], "maths"),
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
