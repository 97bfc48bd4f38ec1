r"""Output agreement of two causal LMs, token by token: llama.cpp's ``--kl-divergence`` figures, in a gate.

Every predicted position of every text counts once (token-weighted: a long text weighs more):

- the KL divergence: the mean over positions of KL(p_ref || p_cand) over the full vocabulary, in
  nats, with its median, p90, p95, p99 and maximum over positions;
- the top-1 agreement: the share of positions where both models' most likely next token is the same;
- RMS Δp: :math:`\sqrt{\text{mean}_t (q_t(x_t) - p_t(x_t))^2}`, the change in the probability of the
  text's actual next token :math:`x_t` (llama.cpp's definition);
- each model's perplexity :math:`\exp(-\text{mean}_t \log p_t(x_t))` over the same positions, and
  their ratio (candidate / reference).

Intervals: a seeded bootstrap over texts (not positions: positions of one text are not independent),
each resample's figure again token-weighted. The output-agreement characteristics
(characteristics/output_agreement.py) turn these figures into their results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..maths import kl_statistics, perplexity
from .bootstrap import RESAMPLES, bootstrap_intervals

_IDS = 100  # texts kept for the failure message and the report


@dataclass(frozen=True)
class TokenFigures:
    """The token-level figures of a pair; ids name texts, largest mean KL first."""

    n: int
    tokens: int
    agreement: float
    agreement_interval: tuple[float, float] | None
    kl: dict[str, float]  # mean, median, p90, p95, p99, maximum over positions
    kl_interval: tuple[float, float] | None
    rms_delta_p: float
    perplexity_reference: float
    perplexity_candidate: float
    disagreeing_ids: list[str]
    largest_ids: list[str]


def compare_positions(
    ids: Sequence[str],
    token_counts: np.ndarray,
    kl: np.ndarray,
    same_top: np.ndarray,
    reference_logprob: np.ndarray,
    candidate_logprob: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> TokenFigures:
    """The figures of per-position statistics (flat over positions, text after text; ``token_counts[i]``
    positions belong to text ``ids[i]``)."""
    counts = np.asarray(token_counts, dtype=np.int64)
    n, tokens = len(ids), int(counts.sum())
    if n == 0 or tokens == 0:
        raise ValueError(f"Expected at least one predicted position but got {tokens} over {n} texts")
    if not len(kl) == len(same_top) == len(reference_logprob) == len(candidate_logprob) == tokens:
        raise ValueError(f"Expected {tokens} positions in every statistic but got {len(kl)}, {len(same_top)}, "
                         f"{len(reference_logprob)}, {len(candidate_logprob)}")
    kl, same_top = np.asarray(kl, dtype=np.float64), np.asarray(same_top, dtype=bool)
    owner = np.repeat(np.arange(n), counts)
    kl_sum = np.bincount(owner, weights=kl, minlength=n)
    same_sum = np.bincount(owner, weights=same_top.astype(np.float64), minlength=n)
    weights = counts.astype(np.float64)

    def token_weighted(per_text: np.ndarray):
        def statistic(resampled: np.ndarray) -> np.ndarray:
            positions = resampled @ weights
            return np.divide(resampled @ per_text, positions, out=np.zeros_like(positions), where=positions > 0)
        return statistic

    intervals = (bootstrap_intervals([token_weighted(same_sum), token_weighted(kl_sum)], n, resamples=resamples, seed=seed)
                 if resamples else [None, None])
    mean_kl = np.divide(kl_sum, weights, out=np.full(n, -1.0), where=counts > 0)  # no positions: ranked last
    by_kl = [i for i in np.argsort(-mean_kl, kind="stable") if counts[i] > 0]
    delta = np.exp(candidate_logprob) - np.exp(reference_logprob)
    return TokenFigures(
        n=n, tokens=tokens, agreement=float(same_top.mean()), agreement_interval=intervals[0], kl=kl_statistics(kl),
        kl_interval=intervals[1], rms_delta_p=float(np.sqrt(np.mean(delta ** 2))),
        perplexity_reference=perplexity(reference_logprob), perplexity_candidate=perplexity(candidate_logprob),
        disagreeing_ids=[ids[i] for i in by_kl if same_sum[i] < counts[i]], largest_ids=[ids[i] for i in by_kl[:_IDS]],
    )
