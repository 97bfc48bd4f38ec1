"""The one protocol every model backend implements, and the batching loop they share."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

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

    @abstractmethod
    def files(self) -> list[Path]:
        """The files whose content determines what the model computes."""

    def load_options(self) -> dict[str, str]:
        """Options that change what the loaded model computes (they enter the cache key)."""
        return {k: v for k, v in self.spec.options.items() if k != "tokenizer"}

    @abstractmethod
    def load(self, task: str) -> None:
        """Load tokenizer and weights for ``task``; a model without a task head yields hidden states only."""

    @abstractmethod
    def forward(
        self, batch: dict[str, np.ndarray], need_hidden: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Return (logits (b, labels), last hidden state (b, seq, hidden)) for a padded batch.

        With ``need_hidden=False`` the hidden state may be skipped (returned as None) when
        the model has logits: attack queries need predictions only.
        """

    def config(self) -> dict:
        """The model's config.json (empty when it has none), readable without loading the model."""
        path = self.local_dir / "config.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def id2label(self) -> dict[int, str] | None:
        """Class index -> label name from config.json, or None when the model does not say."""
        mapping = self.config().get("id2label")
        return {int(k): str(v) for k, v in mapping.items()} if mapping else None

    @property
    def max_positions(self) -> int | None:
        return self.config().get("max_position_embeddings")

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
        limit = max_length
        for bound in (self.max_positions, getattr(self.tokenizer, "model_max_length", None)):
            if isinstance(bound, int) and 0 < bound < limit:
                limit = bound
        encoded = self.tokenizer(list(texts), truncation=True, max_length=limit, padding=False)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
        lengths = np.array([len(ids) for ids in encoded["input_ids"]])
        # Sorting by length keeps padding (and so wasted compute) small in every batch.
        order = np.argsort(-lengths, kind="stable")
        logits_parts, cls_parts, mean_parts = [], [], []
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
            logits, hidden = self.forward(batch, need_hidden)
            forward_counter.batches += 1
            if logits is not None:
                logits_parts.append(np.asarray(logits, dtype=np.float32))
            if hidden is not None:
                hidden = np.asarray(hidden, dtype=np.float32)
                cls_parts.append(hidden[:, 0, :])
                mask = batch["attention_mask"][..., None].astype(np.float32) if "attention_mask" in batch else None
                if mask is None:
                    mean_parts.append(hidden.mean(axis=1))
                else:
                    mean_parts.append((hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0))
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        forward_counter.runs += 1
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        def restore(parts: list[np.ndarray]) -> np.ndarray | None:
            return np.concatenate(parts)[inverse] if parts else None

        return ModelOutputs(logits=restore(logits_parts), cls=restore(cls_parts), mean=restore(mean_parts))
