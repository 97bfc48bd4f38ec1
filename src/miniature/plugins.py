"""A registry of pluggable classes: the built-ins, then an entry-point group's, then any registered at run time.

The characteristics (``miniature.characteristics``) and the tasks (``miniature.tasks``) are each listed by
one :class:`Registry`. An entry point names a subclass (or an instance) of the registry's base class::

    [project.entry-points."miniature.tasks"]
    embedding = "acme_tasks:Embedding"

Modules load on first use: a registry costs nothing to import and its built-ins' names are known without
loading them (the pytest plugin and the settings consult them before any library loads).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from .errors import UsageError


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Registry:
    """The ``kind``s (e.g. "characteristic") named ``builtins`` (name -> "module:class") and those of the
    entry-point ``group``; each must be an instance of ``base`` ("module:class"), and has a ``name``."""

    def __init__(self, *, kind: str, group: str, base: str, builtins: dict[str, str]) -> None:
        self.kind, self.group, self.base, self.builtins = kind, group, base, builtins
        self._registered: dict[str, Any] = {}
        self._loaded: dict[str, Any] | None = None

    def instantiate(self, target: Any) -> Any:
        """An instance of ``target`` ("module:class", a class, or an instance), checked to be one of the base's."""
        base = _load(self.base)
        if isinstance(target, str):
            target = _load(target)
        instance = target() if isinstance(target, type) else target
        if not isinstance(instance, base):
            raise UsageError(f"Expected a {base.__name__} subclass or instance but got {target!r}")
        return instance

    def _entry_points(self) -> dict[str, Any]:
        found = {}
        for entry in metadata.entry_points(group=self.group):
            try:
                instance = self.instantiate(entry.load())
            except Exception as exc:  # a broken plugin must say which one it is
                raise UsageError(f"Could not load {self.kind} {entry.name!r} ({entry.value}) of the entry-point group "
                                 f"{self.group}: {type(exc).__name__}: {exc}") from exc
            found[instance.name] = instance
        return found

    def all(self) -> dict[str, Any]:
        """Every instance by name: the built-ins first, in their order, then third parties'."""
        if self._loaded is None:
            loaded = {name: self.instantiate(target) for name, target in self.builtins.items()}
            for name, instance in self._entry_points().items():
                if name in loaded:
                    raise UsageError(f"The entry point {name!r} of the group {self.group} names a built-in {self.kind}; "
                                     f"give it a name of its own")
                loaded[name] = instance
            self._loaded = loaded
        return {**self._loaded, **self._registered}

    def declared_names(self) -> list[str]:
        """The names, without loading any module: the built-ins', the entry points', the registered ones."""
        declared = [e.name for e in metadata.entry_points(group=self.group) if e.name not in self.builtins]
        return [*self.builtins, *declared, *(n for n in self._registered if n not in self.builtins and n not in declared)]

    def register(self, target: Any) -> Any:
        """Add one for this process (tests, notebooks); returns the instance. A name already taken is refused."""
        instance = self.instantiate(target)
        known = self.all()
        if instance.name in known and type(known[instance.name]) is not type(instance):
            raise UsageError(f"A {self.kind} named {instance.name!r} is registered already "
                             f"({type(known[instance.name]).__qualname__}); give it a name of its own")
        self._registered[instance.name] = instance
        return instance

    def unregister(self, name: str) -> None:
        self._registered.pop(name, None)
