"""Tasks: what a model's forward output means, what an error is, and how gold answers line up.

One :class:`~miniature.tasks.base.Task` per kind of model and data (text classification, extractive QA,
causal language models with multiple choice as their error-set path), found through :mod:`.registry`
(built-ins and the entry-point group ``miniature.tasks``). Backends only load weights and run forward
passes; everything task-specific lives here. Importing this package loads no task module.
"""

from .registry import DEFAULT, declared, get, names, register, tasks, unregister

__all__ = ["DEFAULT", "declared", "get", "names", "register", "tasks", "unregister"]
