"""Checks on models: fetch each model's outputs once through its Runner, then apply a characteristic."""

from __future__ import annotations

from typing import Any

import numpy as np

from .characteristics.prediction_errors import ErrorJaccard, compare_errors
from .data import EvalSet
from .errors import UsageError
from .runner import Model


def error_jaccard(reference: Model, candidate: Model, eval_set: EvalSet) -> ErrorJaccard:
    """Jaccard of the sets of ``eval_set`` points each model gets wrong (paper, section 3).

    Returns an :class:`~miniature.characteristics.ErrorJaccard`: a float in [0, 1] that
    also carries both accuracies, the set sizes, the subset test and the negative-flip rate.
    """
    _check_models(reference, candidate, eval_set, "error_jaccard")
    runner = reference.runner
    check = "the prediction-error check"
    ids = eval_set.ids
    per_model = {}
    for model in (reference, candidate):
        outputs = model.outputs(eval_set)
        gold = runner.gold(model, eval_set, check)
        per_model[model] = (outputs.predictions, gold, outputs.probabilities()[np.arange(len(gold)), gold])
    (ref_pred, ref_gold, ref_p), (cand_pred, cand_gold, cand_p) = per_model[reference], per_model[candidate]
    result = compare_errors(
        ids,
        reference_predictions=ref_pred,
        reference_gold=ref_gold,
        candidate_predictions=cand_pred,
        candidate_gold=cand_gold,
        reference_gold_probability=ref_p,
        candidate_gold_probability=cand_p,
        reference=reference.name,
        candidate=candidate.name,
        dataset=eval_set.name,
    )
    runner.record(result)
    return result


def _check_models(reference: Any, candidate: Any, eval_set: Any, owner: str) -> None:
    for name, value in (("reference", reference), ("candidate", candidate)):
        if not isinstance(value, Model):
            raise UsageError(
                f"Expected a Model (the {name} fixture, or Runner.model(spec)) but got "
                f"{name}={value!r} (type={type(value).__name__}) in {owner}"
            )
    if reference.runner is not candidate.runner:
        raise UsageError(f"reference and candidate of {owner} come from different Runners; use one Runner for both")
    if not isinstance(eval_set, EvalSet):
        raise UsageError(
            f"Expected an EvalSet (the eval_set fixture, or Runner.dataset(spec)) but got "
            f"eval_set={eval_set!r} (type={type(eval_set).__name__}) in {owner}"
        )
