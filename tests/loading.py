"""Loading a backend as the engine does: for a run of a task, with the head the model's files declare."""

from __future__ import annotations

from typing import Any


def load(backend: Any, task: str = "text-classification") -> Any:
    """Load ``backend`` for a run of ``task``; returns it."""
    from miniature import tasks

    backend.load(tasks.get(task), tasks.declared(backend.config(), backend.spec.options.get("task")))
    return backend
