"""The one protocol every model backend implements, and the batching loop they share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..outputs import ModelOutputs
from .spec import ModelSpec


class ForwardCounter:
    """Counts forward passes (batches) run by every backend in this process.

    Tests and the terminal summary read it to prove a warm cache runs no model.
    """

    def __init__(self) -> None:
        self.batches = 0
        self.runs = 0


forward_counter = ForwardCounter()


class Backend(ABC):
    """A loaded model: tokenizer plus something that maps token batches to outputs."""

    def __init__(self, spec: ModelSpec, local_dir: Path) -> None:
        self.spec = spec
        self.local_dir = local_dir
        self.tokenizer = None
        self._config: dict | None = None
        #: Whether the model's own Python (config.json's auto_map) may run: only when the user opts in,
        #: per model (``?trust_remote_code=true``) or for the run (``trust_remote_code = true``).
        self.trust_remote_code = spec.options.get("trust_remote_code", "").lower() in ("1", "true", "yes")
        #: Runs a list of padded batches elsewhere (the Ray engine's actors); None: in this process.
        self.executor: Callable[[list, bool], Iterable] | None = None
        #: Where it runs (a resolved torch device) and the dtype of its weights: set by the engine before load.
        self.device, self.dtype = "cpu", "float32"
        #: Whether :meth:`load` has loaded the weights (the Ray engine's driver loads the tokenizer only).
        self.loaded = False
        #: The task whose head :meth:`load` read (None: hidden states only).
        self.task: Any = None

    def place(self, device: str, dtype: str) -> None:
        """Run on ``device`` (resolved: ``cpu``, ``cuda:N``, ``mps``) with weights in ``dtype``; before :meth:`load`."""
        self.device, self.dtype = device, dtype

    def cpu_only(self) -> bool:
        """Whether this model runs on the CPU only (torch dynamic int8): ``device = "auto"`` then keeps it there."""
        return False

    def placement(self):
        """Where this model runs (after :meth:`load`, what actually ran: ONNX says which provider)."""
        from .device import Placement

        return Placement(self.device, self.dtype)

    @abstractmethod
    def files(self) -> list[Path]:
        """The files whose content determines what the model computes."""

    def load_options(self) -> dict[str, str]:
        """Options that change what the loaded model computes (they enter the cache key)."""
        # device and dtype enter the cache key as the placement (what ran), not the model's content fingerprint
        options = {k: v for k, v in self.spec.options.items() if k not in ("tokenizer", "trust_remote_code", "device", "dtype")}
        return {**options, **({"trust_remote_code": "true"} if self.trust_remote_code else {})}

    def load_tokenizer(self) -> None:
        """The tokenizer alone (what cutting a data set into batches needs)."""
        from transformers import AutoTokenizer

        from ..errors import ModelLoadError

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.local_dir, trust_remote_code=self.trust_remote_code)
        except Exception as exc:
            raise ModelLoadError(f"Could not load the tokenizer of model {self.spec.name!r} from {self.local_dir}: "
                                 f"{type(exc).__name__}: {exc}") from exc

    @abstractmethod
    def load(self, run: Any, declared: Any) -> None:
        """Load tokenizer and weights for a run of task ``run`` (a :class:`~miniature.tasks.base.Task`), the model
        being of task ``declared`` (its spec's or config.json's; None: undeclared). The head of a task the run
        does not read is not loaded: such a model yields hidden states only. Sets ``task``: the task whose head
        it reads (None: no head)."""

    @abstractmethod
    def forward(
        self, batch: dict[str, np.ndarray], need_hidden: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return (logits (b, labels), last hidden state (b, seq, hidden)) for a padded batch.

        With ``need_hidden=False`` the hidden state may be skipped (returned as None) when
        the model has logits: attack queries need predictions only.
        """

    def tokenizer_files(self) -> list[Path]:
        """The files that define the tokenizer's vocabulary (two models with the same ones tokenize alike)."""
        from .fingerprint import VOCABULARY_FILES

        return [self.local_dir / n for n in VOCABULARY_FILES if (self.local_dir / n).is_file()]

    def tokenizer_identity(self):
        """What decides this model's token ids, as data (None when its vocabulary files are missing)."""
        from .tokenizer import tokenizer_identity

        return tokenizer_identity(self.local_dir)

    def facts_for_report(self) -> dict[str, Any]:
        """What the report records of this model beyond its size and speed (a GGUF's quantization types)."""
        return {}

    def size(self) -> dict[str, float | int | None]:
        """What the model weighs: MB of its weight files on disk, and its parameters where the files say
        (safetensors headers, ONNX initializers; None for pickled torch files, which are not opened)."""
        from .fingerprint import parameter_count

        weights = [f for f in self.files() if f.suffix in (".safetensors", ".bin", ".onnx", ".pt", ".pth", ".data")
                   or f.suffix == "" and f.is_file()]
        megabytes = sum(f.stat().st_size for f in weights) / 1e6
        counts = [parameter_count(f) for f in weights]
        return {"megabytes": round(megabytes, 3),
                "parameters": sum(counts) if counts and all(c is not None for c in counts) else None}

    def config(self) -> dict:
        """The model's config.json (empty when it has none), readable without loading the model; read once
        (every batch asks for its vocabulary size)."""
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def _read_config(self) -> dict:
        from ..errors import ModelLoadError

        path = self.local_dir / "config.json"
        if not path.is_file():
            return {}
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"Model {self.spec.name!r}: {path} is not readable JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise ModelLoadError(f"Model {self.spec.name!r}: {path} holds {type(config).__name__} {config!r:.60}; "
                                 f"expected a JSON object (a transformers config)")
        return config

    @property
    def id2label(self) -> dict[int, str] | None:
        """Class index -> label name from config.json, or None when the model does not say."""
        mapping = self.config().get("id2label")
        return {int(k): str(v) for k, v in mapping.items()} if mapping else None

    @property
    def max_positions(self) -> int | None:
        return self.config().get("max_position_embeddings")

    def checked_forward(self, batch: dict[str, np.ndarray], need_hidden: bool = True):
        """:meth:`forward`, with a failure inside the model framework reported as this model's error (exit 3,
        an error in pytest), not a crash; a token id past the model's vocabulary is named before it runs."""
        from ..errors import MiniatureError, ModelLoadError

        vocabulary = self.config().get("vocab_size")
        if isinstance(vocabulary, int) and "input_ids" in batch and batch["input_ids"].size:
            top = int(batch["input_ids"].max())
            if top >= vocabulary:
                raise ModelLoadError(
                    f"Model {self.spec.name!r}: its tokenizer produced token id {top}, but the model's vocabulary has "
                    f"{vocabulary} entries (config.json vocab_size): the tokenizer has tokens the model was not trained "
                    f"with (added tokens?); give the tokenizer the model was exported with"
                )
        try:
            if self.runs_alone() and len(batch["input_ids"]) > 1:
                return self._one_at_a_time(batch, need_hidden)
            return self.forward(batch, need_hidden)
        except MiniatureError:
            raise
        except Exception as exc:
            shape = "x".join(map(str, batch["input_ids"].shape)) if "input_ids" in batch else "?"
            raise ModelLoadError(f"Model {self.spec.name!r} failed on a batch of {shape} tokens: "
                                 f"{type(exc).__name__}: {str(exc)[:500]}") from exc

    #: Why a model that :meth:`runs_alone` does (the report's ``batching``).
    alone_because = "dynamically quantized: batch-mates would change its outputs"

    def runs_alone(self) -> bool:
        """Whether each text runs alone, unpadded, whatever the batch size: a dynamically quantized model scales
        its activations over the whole batch tensor, padding included, so a text's outputs would depend on its
        batch-mates (its KL moved 40 % with the batch size), and with them on a performance setting and on the
        data's order. A float model's batch-mates change its outputs by rounding alone (onnxruntime: not at all;
        torch: by at most 4e-7 on the tests' models), so it runs in batches."""
        return False

    def _one_at_a_time(self, batch: dict[str, np.ndarray], need_hidden: bool):
        """:meth:`forward` of each row alone at its own length, the outputs padded back to the batch's width with
        zeros (past a row's length nothing reads them: tasks slice each row to its length, pooling masks it)."""
        width = batch["input_ids"].shape[1]
        lengths = batch["attention_mask"].sum(axis=1) if "attention_mask" in batch else np.full(len(batch["input_ids"]), width)
        rows = [self.forward({k: v[i:i + 1, :int(n)] for k, v in batch.items()}, need_hidden) for i, n in enumerate(lengths)]

        def joined(parts: list) -> np.ndarray | None:
            if any(p is None for p in parts):
                return None
            if np.ndim(parts[0]) < 3:  # one vector per text: nothing to pad
                return np.concatenate(parts)
            out = np.zeros((len(parts), width, *np.shape(parts[0])[2:]), dtype=np.asarray(parts[0]).dtype)
            for i, part in enumerate(parts):
                out[i, : np.shape(part)[1]] = part[0]
            return out

        return joined([r[0] for r in rows]), joined([r[1] for r in rows])

    def limit(self, max_length: int) -> int:
        """``max_length`` capped by what the model and its tokenizer can read; a usage error when it
        leaves no room for text (the tokenizer would silently ignore it)."""
        from ..errors import UsageError

        special = self.tokenizer.num_special_tokens_to_add() if hasattr(self.tokenizer, "num_special_tokens_to_add") else 0
        if max_length <= special:
            raise UsageError(f"max_length {max_length} leaves no room for text: the tokenizer of model "
                             f"{self.spec.name!r} adds {special} special tokens to every input; give at least {special + 1}")
        limit = max_length
        for bound in (self.max_positions, getattr(self.tokenizer, "model_max_length", None)):
            if isinstance(bound, int) and 0 < bound < limit:
                limit = bound
        return limit

    def batches(self, encoded: Any, keys: list[str], batch_size: int):
        """(window indices, padded batch) in length-sorted batches: padding, and so wasted compute, stays small."""
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            width = int(lengths[index].max())
            batch = {k: np.zeros((len(index), width), dtype=np.int64) for k in keys}
            if "input_ids" in batch and getattr(self.tokenizer, "pad_token_id", None):
                batch["input_ids"].fill(self.tokenizer.pad_token_id)
            for row, i in enumerate(index):
                for k in keys:
                    values = encoded[k][i]
                    batch[k][row, : len(values)] = values
            yield index, batch

    def forward_batches(self, batches: Iterable[tuple[np.ndarray, dict[str, np.ndarray]]], need_hidden: bool = True):
        """(index, logits, (cls, mean) or None) of each padded batch, in order: here, one batch at a time, or
        through ``self.executor`` (the Ray engine's actors), which must return exactly what this loop would."""
        if self.executor is not None:
            batches = list(batches)
            results = self.executor(batches, need_hidden)
            for (index, _), (logits, pooled) in zip(batches, results):
                forward_counter.batches += 1
                yield index, logits, pooled
            return
        for index, batch in batches:
            yield index, *forward_pooled(self, batch, need_hidden)

    def run(
        self,
        texts: Sequence[str],
        *,
        batch_size: int,
        max_length: int,
        progress: Callable[[int, int], None] | None = None,
        need_hidden: bool = True,
    ) -> ModelOutputs:
        """Run the model over ``texts`` once, in length-sorted batches padded to their longest member.

        ``need_hidden=False``: logits only, where the model has them (no embeddings).
        """
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.limit(max_length), padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        order = []
        logits_parts, cls_parts, mean_parts = [], [], []
        for index, logits, pooled in self.forward_batches(self.batches(encoded, keys, batch_size), need_hidden):
            order.append(index)
            if logits is not None:
                logits_parts.append(np.asarray(logits, dtype=np.float32))
            if pooled is not None:
                cls_parts.append(pooled[0])
                mean_parts.append(pooled[1])
            if progress is not None:
                progress(sum(map(len, order)), len(texts))
        forward_counter.runs += 1
        order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        def restore(parts: list[np.ndarray]) -> np.ndarray | None:
            return np.concatenate(parts)[inverse] if parts else None

        return ModelOutputs(logits=restore(logits_parts), cls=restore(cls_parts), mean=restore(mean_parts))


def forward_pooled(backend: Backend, batch: dict[str, np.ndarray], need_hidden: bool):
    """(logits, (cls, mean) or None) of one padded batch: all a task reads of a batch, and small to send back."""
    logits, hidden = backend.checked_forward(batch, need_hidden)
    forward_counter.batches += 1
    return logits, pool(hidden, batch) if hidden is not None else None


def pool(hidden: np.ndarray, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(first token, mean over the attention mask) of a batch's last hidden states."""
    hidden = np.asarray(hidden, dtype=np.float32)
    if "attention_mask" not in batch:
        return hidden[:, 0, :], hidden.mean(axis=1)
    mask = batch["attention_mask"][..., None].astype(np.float32)
    return hidden[:, 0, :], (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
