"""The one typed interface between the characteristics and everything that runs models.

A characteristic is a pure computation over what two models did on a data set. It never loads or
runs a model and never sees the engine: it receives two :class:`Model` handles and an
:class:`Evidence`, and asks it for what it measures, each a value declared here:

- a model's :class:`Decisions` on a data set (what it predicted at each point, and whether that was
  right), as the data set's task reads the model's outputs;
- a pair's output distributions: :class:`PointDistributions` (a distribution per point) or, for causal
  language models, :class:`PositionStatistics` (KL, top-1 agreement and log-probabilities per token
  position, computed with both models side by side);
- a model's embeddings of a data set, and each point's nearest other points under them;
- a model's attack outcomes on an attack set;
- a pair's greedy :class:`Continuations` of a data set's texts (generative models).

The engine implements :class:`Evidence` (``engine/local.py``); the tasks (``tasks/``) decide what each
value means for their kind of model and data. This module imports nothing of either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .data import EvalSet
    from .outputs import ModelOutputs


class Model:
    """A handle on a model of a session: its spec and its display name. Loading and running are the engine's."""

    def __init__(self, session: Any, spec: Any) -> None:
        self.session = session
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key(self) -> str:
        """What tells this model apart in memo keys: its full spec."""
        return self.spec.text

    def outputs(self, eval_set: EvalSet) -> ModelOutputs:
        """This model's raw outputs on ``eval_set`` (computed once per session, cached on disk)."""
        return self.session.outputs(self, eval_set)

    def __repr__(self) -> str:
        return f"Model({self.spec.name!r})"


@dataclass(frozen=True)
class Decisions:
    """What one model decided at each point of a data set, as the data set's task reads its outputs.

    ``predicted`` is each point's decision as text, comparable across models (a class name, an answer
    text with "" for no answer, the chosen choice); ``correct`` says whether it matches the gold (None
    when the data has none); ``gold_probability`` is the probability the model gave the gold answer
    (ranks the points whose correctness changed most; None where the task has no such probability).
    """

    task: str
    predicted: tuple[str, ...]
    correct: np.ndarray | None
    gold: tuple[str, ...] | None = None
    gold_probability: np.ndarray | None = None
    #: Figures the task reports beside accuracy (extractive QA: exact_match and f1).
    scores: Mapping[str, float] = field(default_factory=dict)
    #: The task's settings that decided these (extractive QA: null_threshold).
    settings: Mapping[str, Any] = field(default_factory=dict)

    def shown(self, i: int) -> str:
        """Point ``i``'s decision for people: an empty decision (no answer) says so."""
        return self.predicted[i] or "(no answer)"


@dataclass(frozen=True)
class PointDistributions:
    """Both models' output distributions over the same outcomes, one per point, as logits.

    (n, outcomes), the candidate's outcomes in the reference's order (``classes`` names them where the
    task has names), or (n, 2, positions) for two distributions per point (extractive QA's start and
    end, NaN past a window's end). ``same_top``: where "the same top prediction" is not the argmax of
    these (extractive QA: the same answer text). ``basis``: how the task reads top-1 agreement and KL
    here, when that is not the obvious reading, for the report's notes.
    """

    task: str
    reference: np.ndarray
    candidate: np.ndarray
    reference_correct: np.ndarray | None = None
    candidate_correct: np.ndarray | None = None
    same_top: np.ndarray | None = None
    classes: tuple[str, ...] | None = None
    basis: Mapping[str, str] = field(default_factory=dict)


#: The arrays of :class:`PositionStatistics`, in the disk cache.
POSITION_FIELDS = ("token_counts", "kl", "same_top", "reference_logprob", "candidate_logprob")


@dataclass(frozen=True)
class PositionStatistics:
    """A causal-LM pair's statistics per predicted position of every text, text after text
    (``token_counts`` per text say where each starts): KL(p_ref || p_cand) over the full vocabulary,
    whether the top tokens agree, and each model's log-probability of the actual next token."""

    token_counts: np.ndarray
    kl: np.ndarray
    same_top: np.ndarray
    reference_logprob: np.ndarray
    candidate_logprob: np.ndarray
    task: str = ""

    def owners(self) -> np.ndarray:
        """The text each position belongs to."""
        return np.repeat(np.arange(len(self.token_counts)), self.token_counts)

    def per_text(self, values: np.ndarray) -> np.ndarray:
        """Per text, the sum of ``values`` over its positions."""
        return np.bincount(self.owners(), weights=np.asarray(values, dtype=np.float64), minlength=len(self.token_counts))


@dataclass(frozen=True)
class Continuations:
    """Each prompt (a text of the data set, cut to ``prompt_tokens`` tokens) continued greedily for ``new_tokens``
    tokens by each model: the token ids (n, new_tokens) and their text; ``forced_same`` (n, new_tokens): whether the
    candidate's most likely next token, read along the reference's continuation (teacher-forced), is the token the
    reference chose."""

    task: str
    prompts: tuple[str, ...]
    reference: np.ndarray
    candidate: np.ndarray
    reference_text: tuple[str, ...]
    candidate_text: tuple[str, ...]
    forced_same: np.ndarray


class Evidence(ABC):
    """What a characteristic may ask of a run. ``check`` names the asking check in error messages
    ("the prediction-error check"); a model or data set that cannot give what is asked raises a
    :class:`~miniature.errors.NotApplicable` (or a model or data error) saying why."""

    #: The run's settings (read them; never change them): pooling, sweep, ood_threshold_rule, attack, ...
    settings: Any

    @abstractmethod
    def decisions(self, model: Model, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        """``model``'s decisions on ``eval_set``; with ``gold``, a data set without gold answers is an error."""

    @abstractmethod
    def distributions(self, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      check: str) -> PointDistributions | PositionStatistics:
        """Both models' output distributions on ``eval_set``, comparable outcome by outcome."""

    @abstractmethod
    def embeddings(self, model: Model, eval_set: EvalSet, pooling: str, *, check: str) -> np.ndarray:
        """(n, hidden) embeddings of the points (``cls``, ``mean`` or ``last`` pooling), not normalised."""

    @abstractmethod
    def neighbours(self, model: Model, eval_set: EvalSet, pooling: str, k: int, *, check: str) -> np.ndarray:
        """(n, k) indices of each point's ``k`` nearest other points by cosine of those embeddings, nearest first."""

    @abstractmethod
    def attack_outcomes(self, model: Model, attack_set: EvalSet, settings: Any) -> list[Any]:
        """Each attacked example's :class:`~miniature.characteristics.adversarial.AttackOutcome`."""

    @abstractmethod
    def continuations(self, reference: Model, candidate: Model, eval_set: EvalSet, *, prompt_tokens: int,
                      new_tokens: int, check: str) -> Continuations:
        """Both models' greedy continuations of the data set's texts (see :class:`Continuations`)."""

    @abstractmethod
    def point(self, eval_set: EvalSet, index: int) -> dict[str, str]:
        """How point ``index`` reads in an example table (its text, or its question)."""

    @abstractmethod
    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run for ``key`` (a value derived from models, shared by the pairs that use it)."""
