"""The configured checks: each characteristic run on the configured data, gated when it has a threshold."""

from __future__ import annotations

from typing import Any

from .assertions import assert_attack_robustness, assert_error_jaccard, assert_knn_agreement, assert_ood_agreement
from .checks import attack_robustness, error_jaccard, knn_agreement, ood_agreement
from .config import Threshold
from .errors import UsageError
from .models import ModelSpec
from .runner import Runner

#: gate -> the settings it needs, with the option that sets each.
NEEDS = {
    "error_jaccard": {"reference": "--reference", "eval": "--miniature-eval"},
    "knn_agreement": {"reference": "--reference", "eval": "--miniature-eval"},
    "ood_agreement": {"reference": "--reference", "train": "--miniature-train", "ood": "--miniature-ood"},
    "attack_robustness": {"reference": "--reference", "attack_set": "--miniature-attack-set"},
}


def run_check(runner: Runner, name: str, candidate: str | ModelSpec, threshold: Threshold | None = None) -> Any:
    """Run check ``name`` for ``candidate`` against the configured reference, on the configured data.

    With a ``threshold`` it is a gate: :class:`~miniature.assertions.GateFailure` below it.
    """
    __tracebackhide__ = True
    settings = runner.settings
    missing = [f"{key} ({option})" for key, option in NEEDS[name].items() if getattr(settings, key) is None]
    if missing:
        raise UsageError(f"{name} needs {' and '.join(missing)}; configure {'it' if len(missing) == 1 else 'them'} "
                         f"on the command line or in [tool.miniature]")
    reference, cand = runner.model(settings.reference), runner.model(candidate)
    if name == "ood_agreement":
        validation = runner.dataset(settings.validation) if settings.validation is not None else None
        data, extra = runner.dataset(settings.ood), {"train_set": runner.dataset(settings.train), "validation_set": validation}
    elif name == "attack_robustness":
        data = runner.dataset(settings.attack_set)
        if threshold is None:
            return attack_robustness(reference, cand, data)
        return assert_attack_robustness(reference, cand, data, max_gap=threshold.max_gap)
    else:
        data, extra = runner.dataset(settings.eval), {}
    if name != "error_jaccard":
        extra["k"] = threshold.k if threshold is not None else 10
    if threshold is None:
        return CHECKS[name](reference, cand, data, **extra)
    return GATES[name](reference, cand, data, min=threshold.min, **extra)


CHECKS = {"error_jaccard": error_jaccard, "knn_agreement": knn_agreement, "ood_agreement": ood_agreement,
          "attack_robustness": attack_robustness}
GATES = {"error_jaccard": assert_error_jaccard, "knn_agreement": assert_knn_agreement, "ood_agreement": assert_ood_agreement,
         "attack_robustness": assert_attack_robustness}
