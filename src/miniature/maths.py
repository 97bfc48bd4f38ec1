r"""The shared maths: set agreement, log-softmax, KL divergence and its summaries.

One low-level module that the tasks, which turn forward passes into figures, and the characteristics,
which compare two models' figures, both use: each formula is written once. :func:`log_softmax` and
:func:`kl_from_log_probabilities` take numpy arrays or torch tensors alike (float64 either way): the
causal-LM tasks run them in torch, multi-threaded, over a batch of windows' full-vocabulary logits.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np


def _torch(array: Any) -> Any:
    """torch, when ``array`` is one of its tensors (never imported here: a caller that has a tensor has torch)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(array, torch.Tensor) else None


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    r"""Jaccard coefficient of two sets.

    .. math:: J(A, B) = \frac{|A \cap B|}{|A \cup B|}, \qquad J(\emptyset, \emptyset) = 1

    Two empty sets agree perfectly: neither model makes an error the other does not.

    >>> jaccard({"a", "b"}, {"b", "c"})
    0.3333333333333333
    >>> jaccard(set(), set())
    1.0
    """
    a, b = set(a), set(b)
    union = len(a | b)
    return 1.0 if union == 0 else len(a & b) / union


def log_softmax(logits: np.ndarray) -> np.ndarray:
    r"""Row-wise log-softmax in float64, stable; NaN entries (padding) are left out of the distribution.

    .. math:: \log p_i = z_i - \max_j z_j - \log \sum_j e^{z_j - \max_j z_j}

    >>> np.exp(log_softmax(np.array([[0.0, 0.0]]))).tolist()
    [[0.5, 0.5]]
    """
    torch = _torch(logits)
    if torch is not None:
        z = logits.double()
        if z.isnan().any():  # padding: a pass over the logits that finite ones (every causal LM's) are spared
            z = z.masked_fill(z.isnan(), float("-inf"))
        return torch.log_softmax(z, dim=-1)
    z = np.asarray(logits, dtype=np.float64)
    z = np.where(np.isnan(z), -np.inf, z)
    top = np.max(z, axis=-1, keepdims=True)
    shifted = z - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the exponent of :func:`log_softmax`)."""
    return np.exp(log_softmax(logits))


def kl_from_log_probabilities(log_p: np.ndarray, log_q: np.ndarray, *, finite: bool = False) -> np.ndarray:
    r"""Per row, KL(p || q) in nats from two arrays of log-probabilities over the same outcomes.

    .. math:: \mathrm{KL}(p \,\|\, q) = \sum_i p_i (\log p_i - \log q_i)

    Terms with p_i = 0 are 0 (also where both are -inf: padding left out of both distributions).
    Rounding can leave a result a hair below 0; it is clipped to 0, as KL never is. ``finite=True``: the caller
    knows every log-probability is finite (no padding), which spares a pass over the terms.

    >>> kl_from_log_probabilities(np.log([[0.5, 0.5]]), np.log([[0.5, 0.5]])).tolist()
    [0.0]
    """
    xp = _torch(log_p) or np
    p = xp.exp(log_p)
    with np.errstate(invalid="ignore"):  # padding: 0 * (-inf - -inf), masked out just below
        terms = p * (log_p - log_q)
        if not finite and xp.isnan(terms).any():
            terms = xp.where(p > 0, terms, 0.0)
    return terms.sum(-1).clip(min=0.0)


def kl_from_logits(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> np.ndarray:
    r"""Per row, KL(p_ref || p_cand) in nats of the softmax distributions of two logit arrays.

    Rows may be padded with NaN (left out of both distributions); see :func:`kl_from_log_probabilities`.

    >>> float(kl_from_logits(np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))[0])
    0.0
    """
    if reference_logits.shape != candidate_logits.shape:
        raise ValueError(f"Expected logits of one shape but got {reference_logits.shape} and {candidate_logits.shape}")
    return kl_from_log_probabilities(log_softmax(reference_logits), log_softmax(candidate_logits))


def kl_statistics(kl: np.ndarray) -> dict[str, float]:
    """llama.cpp's summary of per-position KL: mean, median, p90, p95, p99 and maximum."""
    kl = np.asarray(kl, dtype=np.float64)
    p90, p95, p99 = np.percentile(kl, [90, 95, 99])
    return {"mean": float(kl.mean()), "median": float(np.median(kl)), "p90": float(p90), "p95": float(p95),
            "p99": float(p99), "maximum": float(kl.max())}


def rms_delta_p(reference_logits: np.ndarray, candidate_logits: np.ndarray) -> float:
    r"""Root mean square change of the probability of the reference's top class (llama.cpp's "RMS Δp").

    .. math:: \sqrt{\tfrac{1}{n} \sum_d \big(q_d(c_d) - p_d(c_d)\big)^2}, \quad c_d = \arg\max_i p_d(i)
    """
    log_p, log_q = log_softmax(reference_logits), log_softmax(candidate_logits)
    top = np.argmax(log_p, axis=-1)[..., None]
    delta = np.exp(np.take_along_axis(log_q, top, -1)) - np.exp(np.take_along_axis(log_p, top, -1))
    return float(np.sqrt(np.mean(delta ** 2)))


def perplexity(logprobs: np.ndarray) -> float:
    r"""Perplexity of the actual tokens: :math:`\exp(-\frac{1}{T}\sum_t \log p_t(x_t))`."""
    return float(np.exp(-np.mean(np.asarray(logprobs, dtype=np.float64))))
