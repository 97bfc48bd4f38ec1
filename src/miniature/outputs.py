"""What one forward pass of one model over one dataset produces, in eval-set order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: How a point's embedding is taken from the last hidden layer ("last": the last real token, for causal LMs).
POOLINGS = ("cls", "mean", "last")


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
    #: Extractive QA: each question's best answer span (text), its score start+end, and the
    #: no-answer score (the [CLS] span, lowest over the question's windows). Whether to answer
    #: is decided later, against a threshold, so changing it runs no model.
    answers: np.ndarray | None = None
    span_scores: np.ndarray | None = None
    null_scores: np.ndarray | None = None
    #: Extractive QA: each question's first-window start and end logits, (n, longest first window),
    #: NaN past each window's end.
    start_logits: np.ndarray | None = None
    end_logits: np.ndarray | None = None
    #: Causal LMs (tasks/causal_lm.py): the last real token's hidden state; per text, how many positions
    #: were predicted, and per position (padded past that count with 0 and -1) the log-probability of the
    #: text's actual next token and the model's top token; on multiple-choice data, each choice's summed
    #: log-likelihood (-inf past a row's choices).
    last: np.ndarray | None = None
    token_counts: np.ndarray | None = None
    token_logprobs: np.ndarray | None = None
    top_tokens: np.ndarray | None = None
    choice_scores: np.ndarray | None = None

    @property
    def n(self) -> int:
        for array in (self.logits, self.cls, self.mean, self.answers, self.token_counts):
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
        """The per-point embedding: ``"cls"`` (the paper's choice), ``"mean"`` or ``"last"`` (causal LMs) pooling."""
        if pooling not in POOLINGS:
            raise ValueError(f"Expected pooling to be one of {', '.join(POOLINGS)} but got {pooling!r}")
        array = {"cls": self.cls, "mean": self.mean, "last": self.last}[pooling]
        if array is None:
            raise ValueError("these outputs have no hidden states, so no embeddings")
        return array

