"""Text classification: a prediction is the argmax of the logits; gold labels are aligned to each model's classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import EvalSet, align_labels
from ..errors import MissingOutput


def architectures(engine: Any, model: Any) -> str:
    return ", ".join(engine.backend(model).config().get("architectures") or []) or "not stated"


def gold(engine: Any, model: Any, eval_set: EvalSet, check: str) -> np.ndarray:
    """The eval set's labels as ``model``'s class indices."""
    labels = eval_set.require_labels(check)
    outputs = engine.outputs(model, eval_set)
    if outputs.logits is None:
        raise MissingOutput(
            f"Model {model.name!r} has no classification head (architectures: {architectures(engine, model)}), so it "
            f"makes no predictions, which {check} needs; give a fine-tuned classifier"
        )
    return align_labels(
        labels,
        id2label=engine.backend(model).id2label,
        num_labels=int(outputs.logits.shape[1]),
        label_names=eval_set.label_names,
        label_map=engine.settings.label_map,
        dataset=eval_set.name,
        model=model.name,
    )
