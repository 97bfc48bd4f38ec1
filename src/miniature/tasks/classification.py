"""Text classification: a prediction is the argmax of the logits; gold labels are aligned to each model's classes."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data import EvalSet, align_labels
from ..errors import MissingOutput


def architectures(engine: Any, model: Any) -> str:
    return ", ".join(engine.backend(model).config().get("architectures") or []) or "not stated"


def without_head() -> str:
    """What still runs on a model without a head: the checks that read embeddings only (from the registry)."""
    from ..characteristics import registry

    names = registry.reading("embeddings")
    return f", or run only the checks that need no head: {', '.join(names)} (on unlabelled text too)" if names else ""


def logits(engine: Any, model: Any, eval_set: EvalSet, check: str) -> np.ndarray:
    """``model``'s logits on ``eval_set``; a model without a classification head is named, with what still runs."""
    outputs = engine.outputs(model, eval_set)
    if outputs.logits is None:
        raise MissingOutput(
            f"Model {model.name!r} has no classification head (architectures: {architectures(engine, model)}), so it "
            f"makes no predictions, which {check} needs; give a fine-tuned classifier{without_head()}"
        )
    return outputs.logits


def gold(engine: Any, model: Any, eval_set: EvalSet, check: str) -> np.ndarray:
    """The eval set's labels as ``model``'s class indices."""
    labels = eval_set.require_labels(check)
    return align_labels(
        labels,
        id2label=engine.backend(model).id2label,
        num_labels=int(logits(engine, model, eval_set, check).shape[1]),
        label_names=eval_set.label_names,
        label_map=engine.settings.label_map,
        dataset=eval_set.name,
        model=model.name,
    )
