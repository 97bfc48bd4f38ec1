"""The local engine: each model over each dataset once per process, on this machine, backed by the disk cache.

The one seam where models run. It implements :class:`~miniature.evidence.Evidence`, what the
characteristics ask for (a model's decisions, a pair's distributions, embeddings, neighbours, attack
outcomes), by asking the data set's task what the outputs mean; the characteristics never load a model
or see this engine. Models are handles with a ``spec`` and a ``name`` (:class:`~miniature.evidence.Model`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import tasks
from ..cache import OutputCache, cache_key
from ..config import Settings
from ..data import DatasetSpec, EvalSet, load_eval_set, parse_dataset_spec
from ..errors import MissingOutput, ModelLoadError, NotApplicable, NotCached
from ..evidence import (
    Continuations,
    Decisions,
    Evidence,
    Model,
    PointDistributions,
    PositionStatistics,
)
from ..models import Backend, ModelSpec, open_backend, parse_model_spec
from ..outputs import ModelOutputs
from ..progress import Progress
from ..tasks.base import Task
from .derived import Derived

log = logging.getLogger("miniature")


@dataclass
class RunStats:
    """Where each (model, dataset) output came from in this run."""

    computed: int = 0
    from_disk: int = 0
    seconds_computing: float = 0.0
    #: Examples attacked in this run, and attack outcomes taken from the cache.
    attacked: int = 0
    attacks_from_cache: int = 0
    seconds_attacking: float = 0.0


@dataclass
class Engine(Derived, Evidence):
    """Loads data sets and backends, runs each model at most once per data set, caches its outputs."""

    settings: Settings = field(default_factory=Settings)
    stats: RunStats = field(default_factory=RunStats)
    #: Where progress lines of slow work go; None: the "miniature" logger at INFO.
    progress: Callable[[str], None] | None = None
    #: A line every few seconds while a step runs (someone is watching), else one per finished step;
    #: None: when stdout is a terminal; a callable: asked each time (pytest's terminal, which capture hides).
    live: bool | Callable[[], bool] | None = None
    #: Read outputs from the cache only, never run a model (NotCached when one is missing): pytest-xdist's
    #: controller, which builds the all-pairs matrix from what its workers computed.
    cache_only: bool = False

    def __post_init__(self) -> None:
        self._backends: dict[str, Backend] = {}
        self._datasets: dict[str, EvalSet] = {}
        self._outputs: dict[tuple[str, str], ModelOutputs] = {}
        self._opened_cache: OutputCache | None = None
        #: What this run looked at, for reports: model name -> content fingerprint, and the data sets.
        self._fingerprints: dict[str, str] = {}
        self.datasets_used: dict[str, EvalSet] = {}
        #: model name -> [points, seconds] of the forward passes this run computed (throughput on this device).
        self.timings: dict[str, list[float]] = {}
        self._neighbours: dict[tuple, np.ndarray] = {}
        self._derived: dict[tuple, Any] = {}
        #: How each output ("outputs", model key, data fingerprint), pair ("pair", reference key, candidate key, data
        #: fingerprint), continuation ("generation", ...; "followed", ...) and attack of this run was computed:
        #: {"engine": "local" | "ray" | "cache", "actors": N on Ray}.
        self.ran: dict[tuple, dict[str, Any]] = {}

    @property
    def task(self) -> Task:
        """The run's task (``task =``): which model heads are read."""
        return tasks.get(self.settings.task)

    def task_for(self, eval_set: EvalSet) -> Task:
        """The task that reads ``eval_set`` in this run (a data set's shape may pick it)."""
        return self.task.reading(eval_set)

    def parse_model(self, spec: str | ModelSpec) -> ModelSpec:
        if isinstance(spec, str):
            spec = parse_model_spec(spec, aliases=self.settings.models, base_dir=self.settings.base_dir)
        return spec

    def dataset(self, spec: str | DatasetSpec | EvalSet) -> EvalSet:
        if isinstance(spec, EvalSet):
            return spec
        if isinstance(spec, str):
            spec = parse_dataset_spec(spec, base_dir=self.settings.base_dir)
        if spec.text not in self._datasets:
            self._datasets[spec.text] = load_eval_set(spec)
        return self._datasets[spec.text]

    @property
    def _cache(self) -> OutputCache | None:
        """The output cache, checked usable on first use (not at start: a pytest run that gates nothing
        must not make a cache folder)."""
        if self._opened_cache is None and self.settings.cache_dir:
            self._opened_cache = OutputCache(self.settings.cache_dir)
        return self._opened_cache

    @property
    def output_cache(self) -> OutputCache | None:
        """The disk cache (the attack keeps its outcomes beside it, and writes them only where the cache is writable)."""
        return self._cache

    def handle(self, spec: str | ModelSpec) -> Model:
        """A handle on a model the engine runs for a check's own use (the attack's masked LM), outside any session."""
        return Model(None, self.parse_model(spec))

    def fingerprint(self, model: Any) -> str:
        """The content fingerprint of every file ``model`` loads, with its load options (computed once)."""
        if model.key not in self._fingerprints:
            self._fingerprints[model.key] = backend_fingerprint(self.backend(model))
        return self._fingerprints[model.key]

    def known_fingerprint(self, model: Any) -> str | None:
        """``model``'s fingerprint if this run needed it (the report lists it), else None."""
        return self._fingerprints.get(model.key)

    def backend(self, model: Any) -> Backend:
        if model.key not in self._backends:
            backend = open_backend(model.spec)
            backend.trust_remote_code |= self.settings.trust_remote_code
            backend.place(*self.placement(model, backend))
            self._backends[model.key] = backend
        return self._backends[model.key]

    def placement(self, model: Any, backend: Backend) -> tuple[str, str]:
        """(device, dtype) ``model`` runs with: its spec's ``?device=``/``?dtype=``, else the run's settings.
        ``auto`` leaves a CPU-only model (torch dynamic int8) on the CPU; naming a device it cannot use is an error."""
        options = model.spec.options
        asked = options.get("device", self.settings.device)
        where = f"model {model.name!r} (?device=)" if "device" in options else "device (--miniature-device)"
        device = "cpu" if asked == "auto" and backend.cpu_only() else self.resolve_device(asked, where)
        return device, options.get("dtype", self.settings.dtype)

    def resolve_device(self, asked: str, where: str) -> str:
        """The torch device ``asked`` names where this engine runs models (here: this machine)."""
        from ..models.device import resolve_device

        return resolve_device(asked, where)

    def measures(self, model: Any) -> dict[str, Any]:
        """What compressing bought and what it cost, for the report: size on disk, parameters, and the measured
        throughput of this run's forward passes (None when its outputs came from the cache)."""
        from ..errors import MiniatureError

        try:
            size = self.backend(model).size() if model.spec.is_local else {"megabytes": None, "parameters": None}
        except (MiniatureError, OSError, ValueError):
            size = {"megabytes": None, "parameters": None}
        points, seconds = self.timings.get(model.name, (0, 0.0))
        throughput = round(points / seconds, 2) if seconds > 0 else None
        backend = self._backends.get(model.key)
        ran = backend.placement().as_dict() if backend is not None else {}
        if backend is not None:
            batching = self.batching(backend)
            ran["batching"] = (f"batches of {batching}" if batching != "alone" else
                               f"one text at a time ({backend.alone_because})")
        return {**size, "points_per_second": throughput, **ran, **(backend.facts_for_report() if backend is not None else {})}

    def how(self, backend: Backend) -> dict[str, Any]:
        """How a forward pass of ``backend`` ran (see :attr:`ran`): in this process."""
        return {"engine": "local"}

    def batching(self, backend: Backend) -> int | str:
        """How ``backend`` is batched, as the cache keys it: ``"alone"`` for a model that runs one text at a time (its
        outputs depend on nothing else), else the batch size (a float model's batched outputs differ by rounding)."""
        return "alone" if backend.runs_alone() else self.settings.batch_size

    def trusts_remote_code(self, model: Any) -> bool:
        """Whether ``model`` may run its own code (recorded in the report)."""
        options = model.spec.options.get("trust_remote_code", "").lower() in ("1", "true", "yes")
        return bool(self.settings.trust_remote_code or options)

    def loaded_backend(self, model: Any) -> Backend:
        """``model``'s backend with its weights loaded (to run it outside :meth:`outputs`)."""
        if self.cache_only:
            raise NotCached(f"{model.name} would have to run")
        share_cores_with_other_workers()
        backend = self.backend(model)
        if not backend.loaded:
            backend.load(self.task, tasks.declared(backend.config(), model.spec.options.get("task")))
        return backend

    def lock(self, key: str) -> Any:
        """The cache's lock on ``key`` (nothing to lock without a cache)."""
        import contextlib

        return self._cache.lock(key) if self._cache else contextlib.nullcontext()

    def placement_key(self, backend: Backend) -> dict[str, Any]:
        """Where ``backend`` runs, as the output cache keys it."""
        return backend.placement().key()

    def adopt(self, model: Any, backend: Backend) -> None:
        """Use ``backend`` (opened and placed by the caller) for ``model``."""
        self._backends[model.key] = backend

    def progress_of(self, what: str, total: int, *, unit: str = "points", per: str = "s") -> Progress:
        import sys

        live = self.live() if callable(self.live) else self.live if self.live is not None else sys.stdout.isatty()
        return Progress(self.report_progress, what, total, unit=unit, live=live, per=per)

    def report_progress(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
        else:
            log.info("miniature: %s", message)

    def outputs(self, model: Any, eval_set: EvalSet) -> ModelOutputs:
        """The model's outputs on ``eval_set``: from memory, else the disk cache, else one forward pass."""
        memo_key = (model.key, eval_set.fingerprint)
        if memo_key in self._outputs:
            return self._outputs[memo_key]
        backend = self.backend(model)
        task = self.task_for(eval_set)
        self.datasets_used[eval_set.name] = eval_set
        key = cache_key(
            model=self.fingerprint(model),
            dataset=eval_set.fingerprint,
            task=task.name,
            max_length=self.settings.max_length,
            batch_size=self.batching(backend),
            # float16 against float32, CUDA kernels against CPU ones: where it ran changes the outputs.
            **self.placement_key(backend),
            **task.preprocessing(self.settings),
        )
        with self.lock(key):
            outputs = self._cache.get(key) if self._cache else None
            if outputs is not None and outputs.n == len(eval_set):
                check_finite(model, eval_set, outputs)
                self.stats.from_disk += 1
                self.ran[("outputs", model.key, eval_set.fingerprint)] = {"engine": "cache"}
                log.info("miniature: %s on %s from cache", model.name, eval_set.name)
            elif self.cache_only:
                raise NotCached(f"{model.name} on {eval_set.name} is not in the cache")
            else:
                outputs = self._compute(model, backend, eval_set, task)
                if self._cache:
                    self._cache.put(key, outputs, {"model": model.spec.text, "dataset": eval_set.name, "n": len(eval_set)})
        self._outputs[memo_key] = outputs
        return outputs

    def _compute(self, model: Any, backend: Backend, eval_set: EvalSet, task: Task) -> ModelOutputs:
        self.loaded_backend(model)
        log.info("miniature: running %s on %s (n=%d)", model.name, eval_set.name, len(eval_set))
        start = time.perf_counter()
        progress = self.progress_of(f"running {model.name} on {eval_set.name}", len(eval_set), unit=task.unit)
        outputs = task.run(backend, eval_set, self.settings, progress=progress)
        self.ran[("outputs", model.key, eval_set.fingerprint)] = self.how(backend)
        check_finite(model, eval_set, outputs)
        seconds = time.perf_counter() - start
        self.stats.seconds_computing += seconds
        timing = self.timings.setdefault(model.name, [0, 0.0])
        timing[0] += len(eval_set)
        timing[1] += seconds
        self.stats.computed += 1
        if outputs.n != len(eval_set):
            raise ModelLoadError(
                f"Model {model.name!r} returned {outputs.n} outputs for the {len(eval_set)} points of {eval_set.name!r}"
            )
        return outputs

    def attack(self, target: Any, lm: Any, similarity: Any, settings: Any, todo: list):
        """Attack each ``((id, text, label), key)`` of ``todo``; yields (outcome dict, key) as each finishes."""
        from ..attack.runs import attack_here

        return attack_here(self, target, lm, similarity, settings, todo)

    # -- the evidence the characteristics ask for ---------------------------------------------------------------

    def decisions(self, model: Any, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        key = ("decisions", model.key, eval_set.content_key, gold)
        return self.memo(key, lambda: self.task_for(eval_set).decisions(self, model, eval_set, check=check, gold=gold))

    def distributions(self, reference: Any, candidate: Any, eval_set: EvalSet, *,
                      check: str) -> PointDistributions | PositionStatistics:
        key = ("distributions", reference.key, candidate.key, eval_set.content_key)
        return self.memo(key, lambda: self.task_for(eval_set).distributions(self, reference, candidate, eval_set,
                                                                             check=check))

    def embeddings(self, model: Any, eval_set: EvalSet, pooling: str, *, check: str) -> np.ndarray:
        """The model's L2-unnormalised embeddings of ``eval_set`` (``cls``, ``mean`` or ``last`` pooling)."""
        outputs = self.outputs(model, eval_set)
        try:
            return outputs.embeddings(pooling)
        except ValueError as exc:
            raise MissingOutput(f"Model {model.name!r} gave no usable embeddings for {check}: {exc}") from exc

    def neighbours(self, model: Any, eval_set: EvalSet, pooling: str, k: int, *, check: str) -> np.ndarray:
        """Each point's ``k`` nearest other points under ``model``, searched once per (model, data, pooling)."""
        from ..characteristics.neighbours import nearest_others

        key = (model.key, eval_set.fingerprint, pooling)
        known = self._neighbours.get(key)
        if known is None or known.shape[1] < k:
            known = self._neighbours[key] = nearest_others(self.embeddings(model, eval_set, pooling, check=check), k)
        return known[:, :k]  # rows are ordered nearest first, so a wider search answers a narrower one

    def attack_outcomes(self, model: Any, attack_set: EvalSet, settings: Any) -> list[Any]:
        """Each example's outcome of BERT-Attack on ``model`` (cached per example on disk; see attack/runs.py)."""
        from ..attack.offline import import_textattack
        from ..attack.runs import attack_outcomes

        task = self.task_for(attack_set)
        if task.unattackable:
            raise NotApplicable(task.unattackable)
        import_textattack()  # before any model runs: a missing extra should fail fast

        def attacked() -> list[Any]:
            before = self.stats.attacked
            outcomes = attack_outcomes(self, model, attack_set, settings)
            where = ("attack", model.key, attack_set.fingerprint)
            self.ran[where] = self.attacked_how() if self.stats.attacked > before else {"engine": "cache"}
            return outcomes

        return self.memo(("attack", model.key, attack_set.content_key, settings), attacked)

    def attacked_how(self) -> dict[str, Any]:
        """How this engine's attacks ran (see :attr:`ran`): in this process."""
        return {"engine": "local"}

    def point(self, eval_set: EvalSet, index: int) -> dict[str, str]:
        return self.task_for(eval_set).point(eval_set, index)

    def continuations(self, reference: Any, candidate: Any, eval_set: EvalSet, *, prompt_tokens: int, new_tokens: int,
                      check: str) -> Continuations:
        key = ("continuations", reference.key, candidate.key, eval_set.fingerprint, prompt_tokens, new_tokens)
        return self.memo(key, lambda: self.task_for(eval_set).continuations(
            self, reference, candidate, eval_set, prompt_tokens=prompt_tokens, new_tokens=new_tokens, check=check))

    def computed_by(self, models: list[Any], data: list[EvalSet]) -> dict[str, Any] | None:
        """How the outputs a result read were computed in this run: ``{"engine": "ray", "actors": N}`` when any
        ran on Ray actors (the most actors any used), else ``{"engine": "local"}`` when any ran here, else
        ``{"engine": "cache"}`` (every one read from the disk cache); None when none is known."""
        keys = {m.key for m in models}
        prints = {d.fingerprint for d in data}
        found = [how for key, how in self.ran.items() if set(key[1:-1]) & keys and key[-1] in prints]
        for engine in ("ray", "local", "cache"):
            chosen = [how for how in found if how["engine"] == engine]
            if chosen:
                return max(chosen, key=lambda how: how.get("actors", 0))
        return None

    def memo(self, key: tuple, compute: Any) -> Any:
        """A derived value (such as a model's OOD detections) computed once per run."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]



def share_cores_with_other_workers() -> None:
    """Under pytest-xdist, give each worker its share of the cores: N workers each using every core run
    slower together than one alone (the demo's gate under -n 2 took twice as long as serial)."""
    import os

    from ..models.device import xdist_workers

    if (workers := xdist_workers()) > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def check_finite(model: Any, eval_set: EvalSet, outputs: ModelOutputs) -> None:
    """A model that computes NaN or infinity is broken: an error naming it, never a value to gate on.

    (A NaN logit has no argmax; NaN embeddings make FAISS return arbitrary neighbours; either would
    give a plausible-looking agreement.)
    """
    for name in ("logits", "cls", "mean", "span_scores", "null_scores", "start_logits", "end_logits", "last",
                 "token_logprobs", "choice_scores"):
        array = getattr(outputs, name)
        if array is None:
            continue
        values = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
        # QA span scores are -inf where a window has no valid span, and first-window logits NaN past its end:
        # there NaN (scores) or infinity (logits) is the fault.
        bad = (np.isnan(values) if name.endswith("_scores") else np.isinf(values) if name.endswith("_logits")
               else ~np.isfinite(values)).any(axis=1)
        if bad.any():
            what = {"cls": "hidden states (CLS)", "mean": "hidden states (mean-pooled)", "last": "hidden states (last token)",
                    "token_logprobs": "token log-probabilities", "choice_scores": "choice log-likelihoods"}.get(name, name)
            raise ModelLoadError(
                f"Model {model.name!r} computed non-finite {what} (NaN or infinity) for {int(bad.sum())} of the "
                f"{len(array)} points of {eval_set.name!r} (first: {eval_set.ids[int(np.flatnonzero(bad)[0])]!r}); "
                f"a broken export or quantization cannot be gated: check the model"
            )


def backend_fingerprint(backend: Backend) -> str:
    from ..models.fingerprint import fingerprint

    options = "&".join(f"{k}={v}" for k, v in sorted(backend.load_options().items()))
    return fingerprint(backend.files(), extra=f"{backend.spec.backend}?{options}")
