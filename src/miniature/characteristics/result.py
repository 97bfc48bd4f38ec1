"""The shape every characteristic returns: an agreement in [0, 1] that is a float and carries its details."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class Agreement(float):
    """A float (compare it, format it, gate on it) whose details are attributes.

    Subclasses name their ``metric``; ``as_dict`` gives a JSON-ready view; results pickle
    (so they cross process boundaries, e.g. to xdist's controller).
    """

    metric = "agreement"

    def __new__(cls, value: float, **details: Any) -> Agreement:
        obj = super().__new__(cls, value)
        obj.__dict__.update(details)
        return obj

    @property
    def value(self) -> float:
        return float(self)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": float(self), **{k: _plain(v) for k, v in self.__dict__.items()}}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({float(self):.4f}, reference={self.reference!r}, "
                f"candidate={self.candidate!r}, n={self.n})")

    def __reduce__(self):
        return (_rebuild, (type(self), float(self), dict(self.__dict__)))


def _rebuild(cls: type[Agreement], value: float, details: dict[str, Any]) -> Agreement:
    return cls(value, **details)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
