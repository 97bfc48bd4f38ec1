"""What one forward pass of one model over one dataset produces, in eval-set order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How a point's embedding is taken from the last hidden layer.
POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class ModelOutputs:
    """Per-point outputs of one model on one dataset.

    ``logits`` has shape (n, num_labels); ``cls`` (n, hidden) is the last hidden layer's
    first token and ``mean`` its mean over the attention mask. Any is ``None`` when the
    model does not produce it.
    """

    logits: np.ndarray | None
    cls: np.ndarray | None
    mean: np.ndarray | None = None

    @property
    def n(self) -> int:
        for array in (self.logits, self.cls, self.mean):
            if array is not None:
                return int(array.shape[0])
        return 0

    @property
    def predictions(self) -> np.ndarray:
        if self.logits is None:
            raise ValueError("these outputs have no logits, so no predictions")
        return self.logits.argmax(axis=1)

    def probabilities(self) -> np.ndarray:
        """Softmax of the logits, computed stably in float64."""
        if self.logits is None:
            raise ValueError("these outputs have no logits, so no probabilities")
        shifted = self.logits.astype(np.float64) - self.logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def embeddings(self, pooling: str) -> np.ndarray:
        """The per-point embedding: ``"cls"`` (the paper's choice) or ``"mean"`` pooling."""
        if pooling not in POOLINGS:
            raise ValueError(f"Expected pooling to be one of {', '.join(POOLINGS)} but got {pooling!r}")
        array = self.cls if pooling == "cls" else self.mean
        if array is None:
            raise ValueError("these outputs have no hidden states, so no embeddings")
        return array

