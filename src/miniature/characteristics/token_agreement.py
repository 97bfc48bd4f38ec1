r"""Output agreement of two causal LMs, token by token: llama.cpp's ``--kl-divergence`` figures, in a gate.

Every predicted position of every text counts once (token-weighted: a long text weighs more):

- ``kl_divergence``: the mean over positions of KL(p_ref || p_cand) over the full vocabulary, in
  nats, with its median, p90, p95, p99 and maximum over positions;
- ``top1_agreement``: the share of positions where both models' most likely next token is the same;
- RMS Δp: :math:`\sqrt{\text{mean}_t (q_t(x_t) - p_t(x_t))^2}`, the change in the probability of the
  text's actual next token :math:`x_t` (llama.cpp's definition);
- each model's perplexity :math:`\exp(-\text{mean}_t \log p_t(x_t))` over the same positions, and
  their ratio (candidate / reference).

Intervals: a seeded bootstrap over texts (not positions: positions of one text are not independent),
each resample's figure again token-weighted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .bootstrap import RESAMPLES, bootstrap_intervals
from .output_agreement import _IDS, KlDivergence, Top1Agreement, kl_statistics


def perplexity(logprobs: np.ndarray) -> float:
    r"""Perplexity of the actual tokens: :math:`\exp(-\frac{1}{T}\sum_t \log p_t(x_t))`."""
    return float(np.exp(-np.mean(np.asarray(logprobs, dtype=np.float64))))


def compare_positions(
    ids: Sequence[str],
    token_counts: np.ndarray,
    kl: np.ndarray,
    same_top: np.ndarray,
    reference_logprob: np.ndarray,
    candidate_logprob: np.ndarray,
    *,
    reference: str = "reference",
    candidate: str = "candidate",
    dataset: str = "",
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[Top1Agreement, KlDivergence]:
    """Top-1 agreement and KL divergence from per-position statistics (flat over positions, text after text;
    ``token_counts[i]`` positions belong to text ``ids[i]``)."""
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
    reference_p, candidate_p = np.exp(reference_logprob), np.exp(candidate_logprob)
    ppl_ref, ppl_cand = perplexity(reference_logprob), perplexity(candidate_logprob)
    common = {"reference": reference, "candidate": candidate, "dataset": dataset, "n": n, "task": "causal-lm",
              "tokens": tokens, "perplexity_reference": ppl_ref, "perplexity_candidate": ppl_cand,
              "perplexity_ratio": ppl_cand / ppl_ref}
    top1 = Top1Agreement(value=float(same_top.mean()), interval=intervals[0],
                         disagreeing_ids=[ids[i] for i in by_kl if same_sum[i] < counts[i]], **common)
    stats = kl_statistics(kl)
    divergence = KlDivergence(
        value=stats.pop("mean"), interval=intervals[1], **stats,
        rms_delta_p=float(np.sqrt(np.mean((candidate_p - reference_p) ** 2))), top1_agreement=float(top1),
        largest_ids=[ids[i] for i in by_kl[:_IDS]], **common,
    )
    return top1, divergence
