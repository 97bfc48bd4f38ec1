"""Tasks: what a model's forward output means, what an error is, and how gold answers line up.

A data set's shape picks its task (questions and contexts: extractive QA; texts: classification), except
that ``task = "causal-lm"`` reads every data set with causal language models (tasks/causal_lm.py).
Backends only load weights and run forward passes; everything task-specific lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data import EvalSet
    from ..models import Backend
    from ..outputs import ModelOutputs

#: The task names ``task =`` accepts, in the order the docs list them.
TASKS = ("text-classification", "question-answering", "causal-lm")


def preprocessing(eval_set: EvalSet, settings: Any) -> dict[str, Any]:
    """The settings that change a model's outputs on ``eval_set`` (they enter the cache key)."""
    if settings.task == "causal-lm":  # the windows' overlap over long texts
        return {"doc_stride": settings.doc_stride}
    if eval_set.is_qa:
        return {"doc_stride": settings.stride, "max_answer_length": settings.max_answer_length}
    return {}


def run(backend: Backend, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
    """One forward pass of ``backend`` over ``eval_set``, read for the data set's task (or the run's: causal LMs);
    ``progress(done, total)`` is called after each batch."""
    if settings.task == "causal-lm":
        from .causal_lm import run as run_causal

        return run_causal(backend, eval_set, settings, progress)
    if eval_set.is_qa:
        from .question_answering import run_windows

        return run_windows(backend, eval_set.questions, eval_set.texts, batch_size=settings.batch_size,
                           max_length=settings.max_length, stride=settings.stride,
                           max_answer_length=settings.max_answer_length, progress=progress)
    return backend.run(eval_set.texts, batch_size=settings.batch_size, max_length=settings.max_length,
                       progress=progress)
