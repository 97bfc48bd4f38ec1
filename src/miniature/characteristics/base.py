"""What every characteristic declares, what it returns, and the verdict of a gate on it.

A characteristic is a small class with keyword-only methods (as syrupy's extensions are):
its name, its direction (an agreement where higher is better, or a gap where lower is
better), its threshold schema, the data and outputs it needs, how to compute it for a pair
of models, and how it renders. The registry (:mod:`.registry`) is the only list of them;
the session, the plugin, the CLI and the renderers never switch on a characteristic's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import NotApplicable, UsageError
from ..evidence import Evidence, Model
from ..validation import check_in_range, check_positive_int
from .render import format_value, number, sweep_cell, verdict_cell  # noqa: F401  (their home before render.py)

if TYPE_CHECKING:
    from ..data import EvalSet

__all__ = ["Characteristic", "Failure", "NotApplicable", "Param", "Result", "Threshold", "Verdict"]


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class Result(float):
    """One characteristic measured on one (reference, candidate) pair: a declared record that is
    also its ``value`` as a float, so ``result >= 0.5``, ``pytest.approx`` and ``f"{result:.4f}"``
    read naturally. ``identity`` is the one key that the ledger, the JSON report, the baseline,
    the all-pairs matrix and JUnit use. A verdict is never stored on it (see :class:`Verdict`).
    """

    metric: ClassVar[str] = "result"
    #: Fields that, beside (metric, reference, candidate, dataset), tell two results apart.
    setting: ClassVar[tuple[str, ...]] = ()

    value: float
    reference: str
    candidate: str
    dataset: str
    n: int
    interval: tuple[float, float] | None = dataclasses.field(default=None, metadata={"keep": True})

    def __new__(cls, *args: Any, **fields: Any) -> Result:
        return super().__new__(cls, fields["value"])

    def __reduce__(self):  # pickles by its fields (float's own pickling knows nothing of them)
        return (_rebuild, (type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))

    @property
    def identity(self) -> tuple:
        return identity_from(self.as_dict(plain=False), type(self).setting)

    def as_dict(self, *, plain: bool = True) -> dict[str, Any]:
        """Every field (None-valued optional fields left out), JSON-ready when ``plain``."""
        out: dict[str, Any] = {"metric": self.metric}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None and not f.metadata.get("keep"):
                continue
            out[f.name] = _plain(value) if plain else value
        return out

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name in self.setting)
        return (f"{type(self).__name__}({float(self):.4f}, reference={self.reference!r}, "
                f"candidate={self.candidate!r}, n={self.n}{extra})")


def _rebuild(cls: type[Result], fields: dict[str, Any]) -> Result:
    result = cls(**{k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(cls) if f.init}})
    result.__dict__.update(fields)
    return result


def identity_from(result: Mapping[str, Any], setting: Sequence[str]) -> tuple:
    """A result's identity from its fields (a report's dict, or a live result's): what it measured, of which
    pair, on which data, and the ``setting`` fields its type declares (two results that differ in any of them
    are two results: neither may replace the other in the ledger, a report or a baseline)."""
    values = (json.dumps(result.get(name), sort_keys=True, default=str) for name in setting)
    return (result["metric"], result["reference"], result["candidate"], result["dataset"], *values)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A gate's decision on a result, kept beside it (never written onto it).

    ``bound`` is ``"min"`` (an agreement must reach the threshold) or ``"max"`` (a gap may not
    exceed it); ``compared`` is what met the threshold: the point estimate, or with
    ``mode="lower"`` the cautious end of the interval. NaN never passes.
    """

    threshold: float
    bound: str
    mode: str
    compared: float
    passed: bool

    @classmethod
    def decide(cls, result: Result, threshold: float, *, bound: str, mode: str) -> Verdict:
        upper = bound == "max"
        cautious = result.interval[int(upper)] if mode == "lower" and result.interval is not None else None
        compared = float(result) if cautious is None else float(cautious)
        passed = compared <= threshold if upper else compared >= threshold
        return cls(threshold=float(threshold), bound=bound, mode=mode, compared=compared, passed=bool(passed))

    def as_dict(self) -> dict[str, Any]:
        """The fields a report keeps per gated result (schema v1 names, and the value compared)."""
        return {"threshold": self.threshold, "gate_mode": self.mode, "passed": self.passed, "compared": self.compared}


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a threshold table, declared once: its check and default."""

    check: Callable[[Any, str, str], Any]
    default: Any


POSITIVE_INT = check_positive_int


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A gate on one characteristic: its bound (``min`` or ``max``) and the parameters it runs with."""

    value: float
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Failure:
    """What a failed gate says: a headline, a one-row table (``headers`` and ``row``), and the ids that show
    the failure best, with what they are (``ids_are``: "ids wrong for exactly one model")."""

    headline: str
    headers: list[str]
    row: list[Any]
    ids: Sequence[str]
    ids_are: str


#: How the check functions name each data set argument (settings key -> argument name), for error messages.
_ARGUMENT = {"eval": "eval_set", "attack_set": "attack_set"}


class Characteristic(ABC):
    """One model characteristic: what it needs, how it is computed and gated, how it renders.

    Subclasses set the class attributes and implement the keyword-only methods. A third party
    registers one through the entry-point group ``miniature.characteristics``.
    """

    #: The metric's name: the threshold key, the ``--checks`` entry, the JSON ``metric``.
    name: ClassVar[str]
    #: The section heading of its table.
    title: ClassVar[str]
    #: One line: what it measures (``--help``, docs, unknown-name messages).
    summary: ClassVar[str] = ""
    #: True: an agreement, higher is better, gated by a minimum. False: a gap, gated by a maximum.
    higher_is_better: ClassVar[bool] = True
    #: The threshold table's key for the bound (``min`` for an agreement, ``max`` for a gap).
    bound_key: ClassVar[str] = "min"
    #: The values the bound may take, (low, high) with an infinite end open; None: by direction, an agreement's
    #: [0, 1] and a gap's any finite number (a negative maximum gap asks the candidate to be the more robust).
    bound_range: ClassVar[tuple[float, float] | None] = None
    #: Other names accepted for the threshold.
    synonyms: ClassVar[tuple[str, ...]] = ()
    #: Parameters a threshold table may set besides the bound.
    params: ClassVar[dict[str, Param]] = {}
    #: The data sets it needs: settings key -> what it is (e.g. {"eval": "eval set"}).
    needs: ClassVar[dict[str, str]] = {}
    #: The model outputs it reads: "predictions" (a task head's logits or answers), "embeddings" (hidden states).
    outputs: ClassVar[tuple[str, ...]] = ("predictions",)
    #: Data sets it uses when given (e.g. the OOD check's validation set).
    uses: ClassVar[tuple[str, ...]] = ()
    #: The data set a result is named after (default: the first of :attr:`needs`).
    primary: ClassVar[str | None] = None
    #: Whether an all-pairs matrix (the paper's Table 2) of it makes sense.
    pairwise: ClassVar[bool] = True
    #: The K sweep figure (the paper's Figure 1): (title, x-axis label), or None.
    figure: ClassVar[tuple[str, str] | None] = None
    #: The Result subclass it returns.
    result_type: ClassVar[type[Result]] = Result

    @property
    def bound(self) -> str:
        return "min" if self.higher_is_better else "max"

    # -- thresholds -----------------------------------------------------------------------------

    def check_bound(self, value: Any, *, name: str, owner: str) -> float:
        """The bound as a float in :attr:`bound_range`: by default an agreement's lies in [0, 1], a gap's is any
        finite number."""
        low, high = self.bound_range or ((0.0, 1.0) if self.higher_is_better else (-math.inf, math.inf))
        return check_in_range(value, name, owner, low, high)

    def parse_threshold(self, value: Any, *, owner: str = "[tool.miniature.thresholds]") -> Threshold:
        """A number (the bound) or a table {bound_key = ..., param = ...}."""
        if isinstance(value, Threshold):
            return value
        defaults = {key: param.default for key, param in self.params.items()}
        if not isinstance(value, dict):
            return Threshold(self.check_bound(value, name=self.name, owner=owner), defaults)
        allowed = {self.bound_key, *self.params}
        if set(value) - allowed or self.bound_key not in value:
            raise UsageError(
                f"Expected {self.name} in {owner} to be a number or a table with keys {', '.join(sorted(allowed))} "
                f"({self.bound_key} required) but got {value!r}"
            )
        params = {key: param.check(value.get(key, param.default), f"{self.name}.{key}", owner)
                  for key, param in self.params.items()}
        return Threshold(self.check_bound(value[self.bound_key], name=f"{self.name}.{self.bound_key}", owner=owner), params)

    # -- computing ------------------------------------------------------------------------------

    def run(self, owner: str, reference: Any, candidate: Any, data: Mapping[str, Any],
            params: Mapping[str, Any] | None = None, **measure: Any) -> Result:
        """What a public check function (``owner``) does: check its arguments (two models of one session, its
        data sets as EvalSets, each named in the error as the function calls it) and measure through their session."""
        __tracebackhide__ = True
        session = session_of(reference, candidate, owner)
        checked = {key: evalset_arg(value, _ARGUMENT.get(key, f"{key}_set"), owner, optional=key not in self.needs)
                   for key, value in data.items()}
        return session.measure(self, reference, candidate, checked, params or {}, **measure)

    @abstractmethod
    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> Result:
        """The characteristic of (reference, candidate) on ``data`` (keys of :attr:`needs` and
        :attr:`uses`) with ``params``, from what ``evidence`` gives (their decisions, distributions,
        embeddings, neighbours, attack outcomes). Raises :class:`NotApplicable` when it cannot apply."""

    def params_for(self, threshold: Threshold | None) -> dict[str, Any]:
        """The parameters a configured check runs with (its threshold's, else the defaults)."""
        return dict(threshold.params) if threshold is not None else {k: p.default for k, p in self.params.items()}

    def pair_params(self, result: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters to compute another pair like ``result`` for the all-pairs matrix (no sweep)."""
        return dict(params)

    # -- rendering ------------------------------------------------------------------------------

    @abstractmethod
    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        """(headers, one row per result) of its table; results are report dicts."""

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        """Lines that qualify its table."""
        return []

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: Result, limit: int = 5) -> list[dict[str, str]]:
        """The points that show a failed gate best, as rows of {column: text} (the HTML report lists them):
        their text and what each model made of them. Default: none."""
        return []

    @abstractmethod
    def failure(self, *, result: Result, verdict: Verdict) -> Failure:
        """What a failed gate says (see :class:`Failure`)."""


def session_of(reference: Any, candidate: Any, owner: str) -> Any:
    """The session both models belong to; a usage error naming the bad argument otherwise."""
    for name, value in (("reference", reference), ("candidate", candidate)):
        if not isinstance(value, Model):
            raise UsageError(
                f"Expected a Model (the {name} fixture, or Session.model(spec)) but got "
                f"{name}={value!r} (type={type(value).__name__}) in {owner}"
            )
    if reference.session is not candidate.session:
        raise UsageError(f"reference and candidate of {owner} come from different sessions; use one session for both")
    return reference.session


def evalset_arg(value: Any, name: str, owner: str, *, optional: bool = False) -> EvalSet | None:
    """``value`` if it is an EvalSet (or None when ``optional``); a usage error naming it otherwise."""
    from ..data import EvalSet

    if value is None and optional:
        return None
    if not isinstance(value, EvalSet):
        raise UsageError(
            f"Expected an EvalSet (the {name} fixture, or Session.dataset(spec)) but got "
            f"{name}={value!r} (type={type(value).__name__}) in {owner}"
        )
    return value
