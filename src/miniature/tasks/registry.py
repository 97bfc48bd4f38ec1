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

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

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

_registered: dict[str, Task] = {}
_loaded: dict[str, Task] | None = None


def _instantiate(target: Any) -> Task:
    from .base import Task

    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module), attribute)
    instance = target() if isinstance(target, type) else target
    if not isinstance(instance, Task):
        raise UsageError(f"Expected a Task subclass or instance but got {target!r}")
    return instance


def _entry_points() -> dict[str, Task]:
    found = {}
    for entry in metadata.entry_points(group=GROUP):
        try:
            instance = _instantiate(entry.load())
        except Exception as exc:  # a broken plugin must say which one it is
            raise UsageError(f"Could not load task {entry.name!r} ({entry.value}) of the entry-point group {GROUP}: "
                             f"{type(exc).__name__}: {exc}") from exc
        found[instance.name] = instance
    return found


def tasks() -> dict[str, Task]:
    """Every task by name: built-ins first, then third parties'."""
    global _loaded
    if _loaded is None:
        loaded = {name: _instantiate(target) for name, target in BUILTINS.items()}
        for name, instance in _entry_points().items():
            if name in loaded:
                raise UsageError(f"The entry point {name!r} of the group {GROUP} names a built-in task; give it a "
                                 f"name of its own")
            loaded[name] = instance
        _loaded = loaded
    return {**_loaded, **_registered}


def names() -> list[str]:
    """The task names ``task =`` and ``?task=`` accept: the built-ins' without loading any module, then third parties'."""
    declared = [entry.name for entry in metadata.entry_points(group=GROUP) if entry.name not in BUILTINS]
    return [*BUILTINS, *declared, *(n for n in _registered if n not in BUILTINS and n not in declared)]


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
        if any(a.endswith(task.architectures) for a in architectures if task.architectures):
            return task
    return None


def register(task: Any) -> Task:
    """Add a task for this process (tests, notebooks); returns the instance."""
    instance = _instantiate(task)
    known = tasks()
    if instance.name in known and type(known[instance.name]) is not type(instance):
        raise UsageError(f"A task named {instance.name!r} is registered already ({type(known[instance.name]).__qualname__}); "
                         f"give it a name of its own")
    _registered[instance.name] = instance
    return instance


def unregister(name: str) -> None:
    _registered.pop(name, None)
