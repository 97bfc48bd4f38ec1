"""What a task is: everything about a kind of model and data that the rest of the library must not decide by name.

A task says which models it reads and how (the transformers class, the head's weights, which ONNX outputs
are its head), how a data set is cut and run (tokenization, windows: what enters the cache key), what a
forward output means (per-point logits, answer spans, per-token log-probabilities), what a model's
decision at a point is and whether it is right, and how a point reads in a report. Backends, recipes,
engines, the settings and the characteristics ask the task; none of them compares its name.

A third party adds one through the entry-point group ``miniature.tasks`` (see :mod:`.registry`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from ..errors import NotApplicable

if TYPE_CHECKING:
    from ..data import EvalSet
    from ..evidence import Continuations, Decisions, Model, PointDistributions, PositionStatistics
    from ..outputs import ModelOutputs


class Source(Protocol):
    """What a task reads a model's outputs through (the engine): outputs, the opened backend (its config,
    class names, tokenizer), the run's settings, and a pair's side-by-side statistics."""

    settings: Any

    def outputs(self, model: Model, eval_set: EvalSet) -> ModelOutputs: ...

    def backend(self, model: Model) -> Any: ...

    def pair_statistics(self, reference: Model, candidate: Model, eval_set: EvalSet) -> PositionStatistics: ...

    def generations(self, model: Model, eval_set: EvalSet, *, prompt_tokens: int, new_tokens: int) -> dict: ...

    def followed(self, reference: Model, candidate: Model, eval_set: EvalSet, *, prompt_tokens: int,
                 new_tokens: int) -> np.ndarray: ...


class Task(ABC):
    """A kind of model and data: subclasses set the class attributes and implement :meth:`run`,
    :meth:`decisions` and :meth:`distributions`."""

    #: The name ``task =`` and ``?task=`` take, and results and reports carry.
    name: ClassVar[str]
    #: What it is, in a few words ("extractive QA"), for notes and messages.
    title: ClassVar[str]
    #: One line: which models and data it reads (``--help``, docs).
    summary: ClassVar[str] = ""
    #: The endings of config.json ``architectures`` that declare a model of this task.
    architectures: ClassVar[tuple[str, ...]] = ()
    #: The tasks whose heads a run of this task reads (a model of another task is read headless: hidden states).
    reads: ClassVar[tuple[str, ...]] = ()
    #: Its head, in words ("classification head"), for messages.
    head: ClassVar[str] = "task head"
    #: The transformers auto class that loads a model with its head.
    auto_class: ClassVar[str] = "AutoModel"
    #: Parameter names of its head: a load that leaves them newly initialised makes random predictions.
    head_weights: ClassVar[tuple[str, ...]] = ()
    #: The embedding the representation and distribution checks use by default (a decoder's first token
    #: has attended to nothing but itself, so it embeds no text).
    pooling: ClassVar[str] = "cls"
    #: What a forward pass counts in its progress lines.
    unit: ClassVar[str] = "points"
    #: Whether its forward passes run as padded batches, which the Ray engine hands to actors.
    batched: ClassVar[bool] = True
    #: Whether its head gives one distribution over classes per text (what distillation trains on).
    class_distribution: ClassVar[bool] = False
    #: Why BERT-Attack, which flips a classifier's label, cannot attack its models (None: it can).
    unattackable: ClassVar[str | None] = None
    #: What its models give the characteristics (a characteristic whose ``outputs`` are not all here is not run
    #: unless asked for): "predictions", "embeddings", "generations" (greedy continuations).
    produces: ClassVar[tuple[str, ...]] = ("predictions", "embeddings")

    # -- which task reads what ----------------------------------------------------------------------

    def reading(self, eval_set: EvalSet) -> Task:
        """The task that reads ``eval_set`` in a run of this task (a data set's shape may pick another)."""
        return self

    def reads_head_of(self, model_task: Task | None) -> bool:
        """Whether a run of this task reads the head of a model of ``model_task``."""
        return model_task is not None and model_task.name in self.reads

    def undeclared_heads(self) -> list[Task]:
        """The tasks whose heads an ONNX graph that declares no task is tried for, in order."""
        return [self]

    # -- models ----------------------------------------------------------------------------------------

    def logits(self, out: Any, host: Callable[[Any], np.ndarray]) -> np.ndarray | None:
        """Its head's logits from a transformers forward output (``host`` brings a tensor to numpy float32)."""
        found = getattr(out, "logits", None)
        return host(found) if found is not None else None

    def onnx_head(self, outputs: Sequence[Any], *, options: dict[str, str], config: dict, spec: str,
                  declared: bool) -> dict[str, str] | None:
        """The ONNX graph outputs that are its head ({role: output name}), or None when the graph has none.
        ``declared``: the model says it is of this task (its spec or config.json)."""
        return None

    def onnx_logits(self, results: dict[str, np.ndarray], head: dict[str, str]) -> np.ndarray:
        """Its head's logits from an ONNX run's results."""
        return results[head["logits"]]

    def export_heads(self, out: Any) -> tuple[Any, ...]:
        """The head's tensors an ONNX export returns, from a transformers forward output."""
        return (out.logits,)

    #: The ONNX export's names for :meth:`export_heads` and their dynamic axes.
    export_names: ClassVar[tuple[str, ...]] = ("logits",)
    export_axes: ClassVar[dict[str, dict[int, str]]] = {"logits": {0: "batch"}}
    #: Keyword arguments of the forward pass an export traces.
    export_options: ClassVar[dict[str, Any]] = {}

    def export_context(self, model: Any) -> Any:
        """A context in which the model's forward pass can be traced for an ONNX export."""
        return contextlib.nullcontext()

    # -- data to outputs ---------------------------------------------------------------------------------

    def preprocessing(self, settings: Any) -> dict[str, Any]:
        """The settings besides the model and data that change its outputs (they enter the cache key)."""
        return {}

    @abstractmethod
    def run(self, backend: Any, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
        """One forward pass of ``backend`` over ``eval_set``; ``progress(done, total)`` after each batch."""

    # -- outputs to what characteristics use ---------------------------------------------------------------

    @abstractmethod
    def decisions(self, source: Source, model: Model, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        """``model``'s decision at each point (see :class:`~miniature.evidence.Decisions`)."""

    @abstractmethod
    def distributions(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      check: str) -> PointDistributions | PositionStatistics:
        """Both models' output distributions, comparable outcome by outcome."""

    def check_pair(self, backends: Sequence[Any], names: Sequence[str]) -> None:  # noqa: B027 - most tasks need no check
        """Refuse, before any weights load, a pair whose outputs cannot be compared (NotApplicable, saying why)."""

    # -- a pair read side by side (tasks whose distributions are too large to keep: causal LMs) ---------------------

    def pair_plan(self, backends: Sequence[Any], names: Sequence[str], eval_set: EvalSet, settings: Any) -> Any:
        """How a pair reads ``eval_set``, from the tokenizers alone: an object with ``batches`` (the batches both
        models read) and ``work(batches)`` (what computing some of them needs beside them)."""
        raise NotApplicable(f"Task {self.name!r} compares the models' own outputs; it reads no pair side by side")

    def pair_shard(self, backends: Sequence[Any], names: Sequence[str], batches: list, work: Any,
                   eval_set: EvalSet) -> dict[int, Any]:
        """The statistics of ``batches``, with both models loaded (here, or on a Ray actor that holds both)."""
        raise NotImplementedError

    def pair_merge(self, plan: Any, parts: dict[int, Any]) -> PositionStatistics:
        """The pair's statistics from every shard's."""
        raise NotImplementedError

    def run_pair(self, backends: Sequence[Any], names: Sequence[str], eval_set: EvalSet,
                 settings: Any) -> PositionStatistics:
        """The pair's statistics, every batch in this process."""
        plan = self.pair_plan(backends, names, eval_set, settings)
        return self.pair_merge(plan, self.pair_shard(backends, names, plan.batches, plan.work(plan.batches), eval_set))

    # -- generation (generative models) ---------------------------------------------------------------------

    def continuations(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      prompt_tokens: int, new_tokens: int, check: str) -> Continuations:
        """Both models' greedy continuations of ``eval_set``'s texts (see :class:`~miniature.evidence.Continuations`)."""
        raise NotApplicable(f"{check} continues texts with a generative model; {self.title} models generate no text")

    def generation_prompts(self, backend: Any, eval_set: EvalSet, settings: Any, *, prompt_tokens: int,
                           new_tokens: int) -> list[list[int]]:
        """Each text's prompt as token ids (the tokenizer alone)."""
        raise NotApplicable(f"{self.title} models generate no text")

    def generate(self, backend: Any, starts: Sequence[Sequence[int]], new_tokens: int, eval_set: EvalSet,
                 progress: Any = None) -> np.ndarray:
        """(prompts, new_tokens) token ids: each prompt's greedy continuation."""
        raise NotApplicable(f"{self.title} models generate no text")

    def follow(self, backend: Any, starts: Sequence[Sequence[int]], continuations: np.ndarray, eval_set: EvalSet) -> np.ndarray:
        """(prompts, new_tokens): whether the model's top next token along each given continuation is its token."""
        raise NotApplicable(f"{self.title} models generate no text")

    def point(self, eval_set: EvalSet, index: int) -> dict[str, str]:
        """How point ``index`` reads in an example table."""
        return {"text": eval_set.texts[index]}


def architectures(source: Source, model: Model) -> str:
    """What ``model``'s config.json says it is, for messages."""
    return ", ".join(source.backend(model).config().get("architectures") or []) or "not stated"


def require_shared_tokenizer(backends: Sequence[Any], names: Sequence[str], what: str) -> None:
    """Two models whose tokenizers map text to different ids cannot be compared token by token: NotApplicable,
    saying ``what`` cannot be compared. Tokenizers are compared as data (vocabulary, merges, special tokens),
    not as files, so a re-indented tokenizer.json is the same tokenizer. A GGUF file carries its vocabulary: one
    that differs from its pair's is a broken conversion (a model error naming the first differing id)."""
    from ..errors import ModelLoadError

    identities = [b.tokenizer_identity() for b in backends]
    if identities[0] is None or identities[1] is None:
        raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} cannot be shown to share a tokenizer (a "
                            f"tokenizer's vocabulary files are missing), so their {what} cannot be compared")
    if not identities[0].same_ids(identities[1]):
        said = identities[0].differs(identities[1])
        if "gguf" in (identities[0].source, identities[1].source):
            raise ModelLoadError(f"Models {names[0]!r} and {names[1]!r} are a GGUF and its pair, but their vocabularies "
                                 f"differ ({said}): the GGUF was not converted from this model's tokenizer")
        raise NotApplicable(f"Models {names[0]!r} and {names[1]!r} do not share a tokenizer ({said}), "
                            f"so their {what} cannot be compared")
