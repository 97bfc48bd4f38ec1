"""The only list of tasks: the built-ins, then those of the entry-point group ``miniature.tasks``, then any
registered at run time with :func:`register` (the twin of the characteristics' registry).

An entry point names a :class:`~miniature.tasks.base.Task` subclass (or instance), e.g. in a third
party's pyproject.toml::

    [project.entry-points."miniature.tasks"]
    embedding = "acme_tasks:Embedding"

Modules load on first use, so importing the registry costs nothing (model specs and settings consult it
to check ``task =`` and ``?task=`` before any library loads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..plugins import Registry

if TYPE_CHECKING:
    from .base import Task

GROUP = "miniature.tasks"

#: The built-ins, in the order the docs list them: name -> "module:class".
BUILTINS = {
    "text-classification": "miniature.tasks.classification:TextClassification",
    "question-answering": "miniature.tasks.question_answering:QuestionAnswering",
    "causal-lm": "miniature.tasks.causal_lm:CausalLanguageModelling",
}

#: The task of a run that names none.
DEFAULT = next(iter(BUILTINS))

_registry = Registry(kind="task", group=GROUP, base="miniature.tasks.base:Task", builtins=BUILTINS)


def tasks() -> dict[str, Task]:
    """Every task by name: built-ins first, then third parties'."""
    return _registry.all()


def names() -> list[str]:
    """The task names ``task =`` and ``?task=`` accept: the built-ins' without loading any module, then third parties'."""
    return _registry.declared_names()


def get(name: str, *, owner: str = "task") -> Task:
    """The task called ``name``; a usage error naming the known ones."""
    known = tasks()
    if name not in known:
        raise UsageError(f"Expected {owner} to be one of {', '.join(known)} but got {name!r}")
    return known[name]


def declared(config: dict, option: str | None = None) -> Task | None:
    """The task a model declares: its spec's ``?task=``, else what its config.json's ``architectures`` say (a
    sequence classifier, an extractive-QA model, a causal LM, ...); None for a bare encoder."""
    if option:
        return get(option, owner="?task=")
    architectures = config.get("architectures") or []
    for task in tasks().values():
        if task.architectures and any(a.endswith(task.architectures) for a in architectures):
            return task
    return None


def register(task: Any) -> Task:
    """Add a task for this process (tests, notebooks); returns the instance."""
    return _registry.register(task)


def unregister(name: str) -> None:
    _registry.unregister(name)
