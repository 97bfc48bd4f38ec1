"""Reading a saved report: every field checked against schema version 1 (docs/report-schema.md) before any
renderer or baseline comparison reads it, so a malformed file is one message naming its field
(``results[3].value: expected a number or null, got 'abc'``), never a crash halfway through a render.

The common fields are declared here; a result's own fields are those of its characteristic's result
dataclass (the registry's ``result_type``): the fields it declares without a default are required,
the others are checked when present. Fields a reader does not know are left alone.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from ..errors import UsageError

#: Fields of a result that the report leaves out (per-point arrays): a report never has them.
DROPPED = frozenset({"per_point", "scores"})

_NUMBER = "a number or null"
#: Fields of a result every metric has; ``value`` and ``n`` only on a result that was measured.
_COMMON = {"metric": str, "reference": str, "candidate": str, "dataset": str}
_MEASURED = {"value": float, "n": int}
#: Fields of a gated result (``passed`` is required with a threshold).
_GATE = {"threshold": float | None, "passed": bool, "gate_mode": str, "compared": float | None}


class Malformed(UsageError):
    """A report or baseline file that is not a well-formed schema v1 report."""


def check_report(report: Any, source: str) -> dict[str, Any]:
    """``report`` if every field a reader uses has the type schema v1 gives it; :class:`Malformed` naming the first
    field that does not (prefixed by ``source``, the file)."""
    try:
        _top(report)
    except _Wrong as wrong:
        raise Malformed(f"{source}: {wrong}") from None
    return report


class _Wrong(Exception):
    def __init__(self, where: str, expected: str, value: Any = dataclasses.MISSING) -> None:
        got = "nothing (the field is missing)" if value is dataclasses.MISSING else _shown(value)
        super().__init__(f"{where}: expected {expected}, got {got}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _top(report: dict[str, Any]) -> None:
    _field(report, "created", str, "")
    if report.get("verdict") not in ("pass", "fail"):
        raise _Wrong("verdict", '"pass" or "fail"', report.get("verdict", dataclasses.MISSING))
    _field(report, "gates", dict, "")
    for key in ("total", "failed"):
        _field(report["gates"], key, int, "gates.")
    _field(report, "exit_status", int | None, "", required=False)
    for key in ("settings", "versions", "platform", "datasets", "outputs"):
        _field(report, key, dict | None, "", required=False)
    for key, value in (report.get("outputs") or {}).items():
        _check(value, float | None, f"outputs.{key}")
    _field(report, "models", dict | None, "", required=False)
    for name, model in (report.get("models") or {}).items():
        where = f"models[{name!r}]"
        _check(model, dict, where)
        for key in ("megabytes", "parameters", "points_per_second"):
            _field(model, key, float | None, f"{where}.", required=False)
        for key in ("spec", "location", "fingerprint"):
            _field(model, key, str | None, f"{where}.", required=False)
        _field(model, "tuning", dict | None, f"{where}.", required=False)
        _field(model, "gguf", dict | None, f"{where}.", required=False)
        if model.get("gguf"):
            _field(model["gguf"], "file_type", str, f"{where}.gguf.")
            _field(model["gguf"], "tensor_types", dict, f"{where}.gguf.")
            _field(model["gguf"], "tokens_per_second", float | None, f"{where}.gguf.", required=False)
    if not isinstance(report.get("results"), list):
        raise _Wrong("results", "a list of results", report.get("results", dataclasses.MISSING))
    for i, result in enumerate(report["results"]):
        _result(result, f"results[{i}]")
    _field(report, "errors", list, "", required=False)
    for i, error in enumerate(report.get("errors") or []):
        where = f"errors[{i}]"
        _check(error, dict, where)
        for key, kind in (("check", str | None), ("candidate", str | None), ("message", str)):
            _field(error, key, kind, f"{where}.")
        if error.get("kind") not in ("usage", "model", "data"):
            raise _Wrong(f"{where}.kind", '"usage", "model" or "data"', error.get("kind", dataclasses.MISSING))
    _field(report, "warnings", list, "", required=False)
    for i, warning in enumerate(report.get("warnings") or []):
        _check(warning, str, f"warnings[{i}]")
    _field(report, "matrices", dict | None, "", required=False)
    for metric, matrix in (report.get("matrices") or {}).items():
        _matrix(matrix, f"matrices[{metric!r}]")


def _result(result: Any, where: str) -> None:
    if not isinstance(result, dict):
        raise _Wrong(where, "an object (one result)", result)
    for key, kind in _COMMON.items():
        _field(result, key, kind, f"{where}.")
    status = result.get("status", "ok")
    if status not in ("ok", "not_applicable"):
        raise _Wrong(f"{where}.status", '"ok" or "not_applicable"', status)
    if status == "not_applicable":
        _field(result, "reason", str, f"{where}.")
        return
    for key, kind in _MEASURED.items():
        _field(result, key, kind, f"{where}.")
    interval = result.get("interval")
    if interval is not None and not (isinstance(interval, list) and len(interval) == 2 and all(
            _is_number(v) or result["value"] is None and v is None for v in interval)):
        raise _Wrong(f"{where}.interval", "null or two numbers [low, high]", interval)
    for key, kind in _GATE.items():
        _field(result, key, kind, f"{where}.", required=key == "passed" and result.get("threshold") is not None)
    if result.get("gate_mode", "point") not in ("point", "lower"):
        raise _Wrong(f"{where}.gate_mode", '"point" or "lower"', result["gate_mode"])
    _field(result, "examples", list, f"{where}.", required=False)
    _field(result, "computed_by", dict | None, f"{where}.", required=False)
    for i, example in enumerate(result.get("examples") or []):
        _check(example, dict, f"{where}.examples[{i}]")
    for key, (kind, required) in _own_fields(result["metric"]).items():
        _field(result, key, kind, f"{where}.", required=required)


def _own_fields(metric: str) -> dict[str, tuple[Any, bool]]:
    """{field: (type hint, required)} of the result dataclass of ``metric`` beyond the common fields; {} for a
    characteristic this installation lacks."""
    from ..characteristics import registry
    from ..errors import MiniatureError

    try:
        result_type = registry.get(metric).result_type
    except MiniatureError:
        return {}
    return {f.name: (hint, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f, hint in _hints(result_type) if f.name not in {*_COMMON, *_MEASURED, "interval", *DROPPED}}


def _hints(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve (a third party's): its fields go unchecked
        return []
    return [(f, hints.get(f.name, Any)) for f in dataclasses.fields(cls) if f.init]


def _matrix(matrix: Any, where: str) -> None:
    _check(matrix, dict, where)
    if "not_computed" in matrix:
        _field(matrix, "not_computed", str, f"{where}.")
        return
    _field(matrix, "title", str, f"{where}.")
    _field(matrix, "models", list[str], f"{where}.")
    _field(matrix, "not_applicable", list[str], f"{where}.", required=False)
    _field(matrix, "pairs", list, f"{where}.")
    for i, pair in enumerate(matrix["pairs"]):
        _check(pair, dict, f"{where}.pairs[{i}]")
        for key, kind in (("a", str), ("b", str), ("value", float | None)):
            _field(pair, key, kind, f"{where}.pairs[{i}].")


def _field(parent: dict[str, Any], key: str, kind: Any, prefix: str, *, required: bool = True) -> None:
    if key not in parent:
        if required:
            raise _Wrong(f"{prefix}{key}", _expected(kind))
        return
    _check(parent[key], kind, f"{prefix}{key}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # json writes inf as Infinity


def _check(value: Any, kind: Any, where: str) -> None:
    """``value`` as JSON holds a ``kind`` (a type hint of a result dataclass, or one of this module's)."""
    if not _fits(value, kind, where):
        raise _Wrong(where, _expected(kind), value)


def _fits(value: Any, kind: Any, where: str) -> bool:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is Any:
        return True
    if origin in (Union, types.UnionType):
        if type(None) in args and value is None:
            return True
        return any(_fits(value, a, where) for a in args if a is not type(None))
    if kind is float:  # NaN is written as null
        return value is None or _is_number(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in (bool, str):
        return isinstance(value, kind)
    if kind is type(None):
        return value is None
    if dataclasses.is_dataclass(kind):  # a nested record (an OOD detection, an attack summary): checked field by field
        if not isinstance(value, dict):
            return False

        for f, hint in _hints(kind):
            if f.name not in DROPPED:
                _field(value, f.name, hint, f"{where}.", required=False)
        return True
    if kind is dict or origin in (dict, Mapping):
        if not isinstance(value, dict):
            return False
        if len(args) == 2:
            for key, item in value.items():
                _check(item, args[1], f"{where}[{key!r}]")
        return True
    if kind in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a, where) for v, a in zip(value, args))
        for i, item in enumerate(value):
            if args:
                _check(item, args[0], f"{where}[{i}]")
        return True
    return True  # arrays and other types a report leaves out or keeps as written


def _expected(kind: Any) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (Union, types.UnionType):
        named = [_expected(a) for a in args if a is not type(None)]
        if kind == float | None or float in args:
            return _NUMBER
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if kind is float:
        return _NUMBER
    if kind is int:
        return "a whole number"
    if kind is bool:
        return "true or false"
    if kind is str:
        return "a string"
    if dataclasses.is_dataclass(kind) or kind is dict or origin in (dict, Mapping):
        return "an object"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} ({', '.join(_expected(a) for a in args)})"
    if kind in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset):
        return "a list of strings" if args and args[0] is str else "a list"
    return "a value of another type"
