"""What one forward pass of one model over one dataset produces, in eval-set order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ModelOutputs:
    """Per-point outputs of one model on one dataset.

    ``logits`` has shape (n, num_labels) and ``cls`` (n, hidden); either is ``None``
    when the model does not produce it.
    """

    logits: np.ndarray | None
    cls: np.ndarray | None

    @property
    def n(self) -> int:
        for array in (self.logits, self.cls):
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
