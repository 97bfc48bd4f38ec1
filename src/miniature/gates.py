"""The configured gates: each threshold in [tool.miniature.thresholds] as one runnable check."""

from __future__ import annotations

from typing import Any

from .assertions import assert_error_jaccard, assert_knn_agreement, assert_ood_agreement
from .config import Threshold
from .errors import UsageError
from .models import ModelSpec
from .runner import Runner

#: gate -> the settings it needs, with the option that sets each.
NEEDS = {
    "error_jaccard": {"reference": "--reference", "eval": "--miniature-eval"},
    "knn_agreement": {"reference": "--reference", "eval": "--miniature-eval"},
    "ood_agreement": {"reference": "--reference", "train": "--miniature-train", "ood": "--miniature-ood"},
}


def run_gate(runner: Runner, name: str, threshold: Threshold, candidate: str | ModelSpec) -> Any:
    """Run gate ``name`` for ``candidate`` against the configured reference; raise GateFailure below threshold."""
    __tracebackhide__ = True
    settings = runner.settings
    missing = [f"{key} ({option})" for key, option in NEEDS[name].items() if getattr(settings, key) is None]
    if missing:
        raise UsageError(
            f"[tool.miniature.thresholds] sets {name} but no {' or '.join(missing)} is configured "
            f"(on the command line, or in [tool.miniature])"
        )
    reference, cand = runner.model(settings.reference), runner.model(candidate)
    if name == "error_jaccard":
        return assert_error_jaccard(reference, cand, runner.dataset(settings.eval), min=threshold.min)
    if name == "knn_agreement":
        return assert_knn_agreement(reference, cand, runner.dataset(settings.eval), min=threshold.min, k=threshold.k)
    validation = runner.dataset(settings.validation) if settings.validation is not None else None
    return assert_ood_agreement(
        reference, cand, runner.dataset(settings.ood), train_set=runner.dataset(settings.train),
        validation_set=validation, min=threshold.min, k=threshold.k,
    )
