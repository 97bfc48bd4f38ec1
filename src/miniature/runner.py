"""The one place models run: each model over each dataset once per process, backed by the disk cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .cache import OutputCache, cache_key
from .config import Settings
from .data import DatasetSpec, EvalSet, align_labels, load_eval_set, parse_dataset_spec
from .errors import ModelLoadError
from .models import Backend, ModelSpec, open_backend, parse_model_spec
from .outputs import ModelOutputs

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


class Model:
    """A handle on a model spec; loading and running are deferred to the :class:`Runner`."""

    def __init__(self, runner: Runner, spec: ModelSpec) -> None:
        self.runner = runner
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def outputs(self, eval_set: EvalSet) -> ModelOutputs:
        return self.runner.outputs(self, eval_set)

    def __repr__(self) -> str:
        return f"Model({self.spec.name!r})"


@dataclass
class Runner:
    """Resolves specs, runs models at most once per dataset, and keeps the results of checks."""

    settings: Settings = field(default_factory=Settings)
    stats: RunStats = field(default_factory=RunStats)
    #: Check results in the order they were computed (the terminal summary reads these).
    results: list[Any] = field(default_factory=list)
    #: Where progress lines of slow work (attacks) go; None: the "miniature" logger at INFO.
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        self._models: dict[str, Model] = {}
        self._backends: dict[str, Backend] = {}
        self._datasets: dict[str, EvalSet] = {}
        self._outputs: dict[tuple[str, str], ModelOutputs] = {}
        self._cache = OutputCache(self.settings.cache_dir) if self.settings.cache_dir else None
        #: What this run looked at, for reports: model name -> content fingerprint, and the data sets.
        self.fingerprints: dict[str, str] = {}
        self.datasets_used: dict[str, EvalSet] = {}
        self._neighbours: dict[tuple, np.ndarray] = {}
        self._derived: dict[tuple, Any] = {}

    @property
    def known_models(self) -> list[Model]:
        """Every model this Runner has handed out, in order."""
        return list(self._models.values())

    def model(self, spec: str | ModelSpec) -> Model:
        if isinstance(spec, str):
            spec = parse_model_spec(spec, aliases=self.settings.models, base_dir=self.settings.base_dir)
        return self._models.setdefault(spec.text, Model(self, spec))

    def dataset(self, spec: str | DatasetSpec | EvalSet) -> EvalSet:
        if isinstance(spec, EvalSet):
            return spec
        if isinstance(spec, str):
            spec = parse_dataset_spec(spec, base_dir=self.settings.base_dir)
        if spec.text not in self._datasets:
            self._datasets[spec.text] = load_eval_set(spec)
        return self._datasets[spec.text]

    def backend(self, model: Model) -> Backend:
        if model.spec.text not in self._backends:
            self._backends[model.spec.text] = open_backend(model.spec)
        return self._backends[model.spec.text]

    def loaded_backend(self, model: Model) -> Backend:
        """``model``'s backend with its weights loaded (to run it outside :meth:`outputs`)."""
        backend = self.backend(model)
        if backend.tokenizer is None:
            backend.load(self.settings.task)
        return backend

    def report_progress(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)
        else:
            log.info("miniature: %s", message)

    def outputs(self, model: Model, eval_set: EvalSet) -> ModelOutputs:
        """The model's outputs on ``eval_set``: from memory, else the disk cache, else one forward pass."""
        memo_key = (model.spec.text, eval_set.fingerprint)
        if memo_key in self._outputs:
            return self._outputs[memo_key]
        backend = self.backend(model)
        self.fingerprints[model.name] = backend_fingerprint(backend)
        self.datasets_used[eval_set.name] = eval_set
        key = cache_key(
            model=self.fingerprints[model.name],
            dataset=eval_set.fingerprint,
            task=self.settings.task,
            max_length=self.settings.max_length,
            # Dynamically quantized models scale activations per batch, so which texts share
            # a batch changes their outputs: the batch size is part of the key.
            batch_size=self.settings.batch_size,
            **({"doc_stride": self.settings.stride, "max_answer_length": self.settings.max_answer_length}
               if eval_set.is_qa else {}),
        )
        outputs = self._cache.get(key) if self._cache else None
        if outputs is not None and outputs.n == len(eval_set):
            self.stats.from_disk += 1
            log.info("miniature: %s on %s from cache", model.name, eval_set.name)
        else:
            outputs = self._compute(model, backend, eval_set)
            if self._cache:
                self._cache.put(key, outputs, {"model": model.spec.text, "dataset": eval_set.name, "n": len(eval_set)})
        self._outputs[memo_key] = outputs
        return outputs

    def _compute(self, model: Model, backend: Backend, eval_set: EvalSet) -> ModelOutputs:
        self.loaded_backend(model)
        log.info("miniature: running %s on %s (n=%d)", model.name, eval_set.name, len(eval_set))
        start = time.perf_counter()
        settings = self.settings
        if eval_set.is_qa:
            outputs = backend.run_qa(eval_set.questions, eval_set.texts, batch_size=settings.batch_size,
                                     max_length=settings.max_length, stride=settings.stride,
                                     max_answer_length=settings.max_answer_length)
        else:
            outputs = backend.run(eval_set.texts, batch_size=settings.batch_size, max_length=settings.max_length)
        self.stats.seconds_computing += time.perf_counter() - start
        self.stats.computed += 1
        if outputs.n != len(eval_set):
            raise ModelLoadError(
                f"Model {model.name!r} returned {outputs.n} outputs for the {len(eval_set)} points of {eval_set.name!r}"
            )
        return outputs

    def embeddings(self, model: Model, eval_set: EvalSet, pooling: str, check: str) -> np.ndarray:
        """The model's L2-unnormalised embeddings of ``eval_set`` (``cls`` or ``mean`` pooling)."""
        outputs = self.outputs(model, eval_set)
        try:
            return outputs.embeddings(pooling)
        except ValueError as exc:
            raise ModelLoadError(f"Model {model.name!r} gave no usable embeddings for {check}: {exc}") from exc

    def neighbours(self, model: Model, eval_set: EvalSet, pooling: str, k: int, check: str) -> np.ndarray:
        """Each point's ``k`` nearest other points under ``model``, searched once per (model, data, pooling)."""
        from .characteristics.neighbours import nearest_others

        key = (model.spec.text, eval_set.fingerprint, pooling)
        known = self._neighbours.get(key)
        if known is None or known.shape[1] < k:
            known = self._neighbours[key] = nearest_others(self.embeddings(model, eval_set, pooling, check), k)
        return known[:, :k]  # rows are ordered nearest first, so a wider search answers a narrower one

    def memo(self, key: tuple, compute: Any) -> Any:
        """A derived value (such as a model's OOD detections) computed once per run."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def record(self, result: Any) -> None:
        """Keep a check's result for the summary; the same check re-run with the same settings replaces it."""

        def key(r: Any) -> tuple:
            return (r.metric, r.reference, r.candidate, r.dataset, getattr(r, "pooling", None), getattr(r, "k", None))

        self.results = [r for r in self.results if key(r) != key(result)]
        self.results.append(result)

    def qa_predictions(self, model: Model, eval_set: EvalSet, check: str) -> list[str]:
        """Each question's answer under ``model`` ("" for no answer, by the settings' null_threshold)."""
        outputs = self.outputs(model, eval_set)
        if outputs.answers is None:
            raise ModelLoadError(
                f"Model {model.name!r} has no question-answering head (architectures: {self._architectures(model)}), so it "
                f"answers nothing, which {check} needs on {eval_set.name!r}; give a model fine-tuned for extractive "
                f"QA, or add ?task=question-answering to its spec if its files do not say so"
            )
        return outputs.qa_predictions(self.settings.null_threshold)

    def _architectures(self, model: Model) -> str:
        return ", ".join(self.backend(model).config().get("architectures") or []) or "not stated"

    def gold(self, model: Model, eval_set: EvalSet, check: str) -> np.ndarray:
        """The eval set's labels as ``model``'s class indices."""
        labels = eval_set.require_labels(check)
        outputs = self.outputs(model, eval_set)
        if outputs.logits is None:
            raise ModelLoadError(
                f"Model {model.name!r} has no classification head (architectures: {self._architectures(model)}), so it "
                f"makes no predictions, which {check} needs; give a fine-tuned classifier"
            )
        return align_labels(
            labels,
            id2label=self.backend(model).id2label,
            num_labels=int(outputs.logits.shape[1]),
            label_names=eval_set.label_names,
            label_map=self.settings.label_map,
            dataset=eval_set.name,
            model=model.name,
        )


def backend_fingerprint(backend: Backend) -> str:
    from .models.fingerprint import fingerprint

    options = "&".join(f"{k}={v}" for k, v in sorted(backend.load_options().items()))
    return fingerprint(backend.files(), extra=f"{backend.spec.backend}?{options}")
