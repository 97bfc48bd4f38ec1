"""Beyond the paper: do the two models write the same thing? Agreement of greedy continuations.

Every causal-LM figure but this one is teacher-forced: next-token distributions on given text. What a user
of a chat or completion model sees is generated text, where a small difference compounds: one changed token
changes every later one's context (Dutta et al. 2024 show compressed LLMs whose benchmark accuracy holds
while their answers flip). Here each prompt (a text of the eval set, cut to ``prompt_tokens`` tokens) is
continued greedily for ``new_tokens`` tokens by each model:

- ``generation_agreement`` (an agreement, gated by a minimum): the share of prompts whose continuations are
  identical, token for token;
- beside it, where they part: the mean position of the first differing token (``new_tokens`` for identical
  ones), and the teacher-forced top-1 agreement along the reference's continuation (the share of its tokens
  the candidate, given the same preceding text, would also have chosen), which separates "drifts on its own"
  from "takes another path once and then agrees".

Interval: a seeded bootstrap over prompts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..evidence import Evidence, Model
from ..validation import check_fraction, check_positive_int
from .base import POSITIVE_INT, Characteristic, Failure, Param, Result, Verdict
from .bootstrap import RESAMPLES, bootstrap_intervals, weighted_mean
from .render import format_value, number, verdict_cell

if TYPE_CHECKING:
    from ..data import EvalSet

_IDS = 100


def first_divergence(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row, the index of the first token where two continuations differ (their length where none does).

    >>> first_divergence(np.array([[1, 2, 3], [1, 2, 3]]), np.array([[1, 2, 3], [1, 5, 3]])).tolist()
    [3, 1]
    """
    differs = np.asarray(reference) != np.asarray(candidate)
    return np.where(differs.any(axis=1), differs.argmax(axis=1), differs.shape[1])


@dataclasses.dataclass(eq=False, kw_only=True, repr=False)
class GenerationAgreementResult(Result):
    """The share of prompts both models continue identically, with where the others part.

    ``identical``: how many prompts; ``first_divergence``: the mean index of the first differing token
    (``new_tokens`` for identical continuations); ``forced_top1``: the teacher-forced top-1 agreement along the
    reference's continuations; ``divergent_ids``: prompts whose continuations differ, earliest divergence first.
    """

    metric = "generation_agreement"
    setting = ("prompt_tokens", "new_tokens")

    prompt_tokens: int
    new_tokens: int
    identical: int
    first_divergence: float
    forced_top1: float
    divergent_ids: list[str]
    task: str | None = None


def compare_continuations(
    ids: Sequence[str],
    reference: np.ndarray,
    candidate: np.ndarray,
    forced_same: np.ndarray,
    *,
    prompt_tokens: int,
    reference_name: str = "reference",
    candidate_name: str = "candidate",
    dataset: str = "",
    task: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> GenerationAgreementResult:
    """The agreement of two models' continuations (token ids, (n, new_tokens) each) of the same prompts."""
    reference, candidate, forced_same = np.asarray(reference), np.asarray(candidate), np.asarray(forced_same, bool)
    if reference.shape != candidate.shape or reference.shape != forced_same.shape or len(ids) != len(reference):
        raise ValueError(f"Expected continuations of {len(ids)} prompts, one shape, but got {reference.shape}, "
                         f"{candidate.shape} and {forced_same.shape}")
    if not len(ids):
        raise ValueError("Expected at least one prompt but got none")
    parted = first_divergence(reference, candidate)
    same = parted == reference.shape[1]
    interval = (bootstrap_intervals([weighted_mean(same.astype(np.float64))], len(ids), resamples=resamples,
                                    seed=seed)[0] if resamples else None)
    order = np.argsort(parted, kind="stable")
    return GenerationAgreementResult(
        value=float(same.mean()), interval=interval, reference=reference_name, candidate=candidate_name, dataset=dataset,
        n=len(ids), prompt_tokens=prompt_tokens, new_tokens=int(reference.shape[1]), identical=int(same.sum()),
        first_divergence=float(parted.mean()), forced_top1=float(forced_same.mean()), task=task,
        divergent_ids=[ids[i] for i in order if not same[i]][:_IDS],
    )


# -- the characteristic ---------------------------------------------------------------------------


def generation_agreement(reference: Model, candidate: Model, eval_set: EvalSet, *, new_tokens: int = 32,
                         prompt_tokens: int = 32, resamples: int = RESAMPLES, record: bool = True) -> GenerationAgreementResult:
    """The share of ``eval_set``'s texts, cut to ``prompt_tokens`` tokens, that both models continue identically for
    ``new_tokens`` greedy tokens (causal LMs)."""
    params = {"new_tokens": check_positive_int(new_tokens, "new_tokens", "generation_agreement"),
              "prompt_tokens": check_positive_int(prompt_tokens, "prompt_tokens", "generation_agreement")}
    return GenerationAgreement().run("generation_agreement", reference, candidate, {"eval": eval_set}, params,
                                     resamples=resamples, record=record)


def assert_generation_agreement(reference: Model, candidate: Model, eval_set: EvalSet, *, min: float,
                                new_tokens: int = 32, prompt_tokens: int = 32) -> GenerationAgreementResult:
    """Fail unless at least ``min`` of the prompts are continued identically; return the result."""
    __tracebackhide__ = True
    threshold = check_fraction(min, "min", "assert_generation_agreement")
    params = {"new_tokens": check_positive_int(new_tokens, "new_tokens", "assert_generation_agreement"),
              "prompt_tokens": check_positive_int(prompt_tokens, "prompt_tokens", "assert_generation_agreement")}
    return GenerationAgreement().run("assert_generation_agreement", reference, candidate, {"eval": eval_set}, params,
                                     threshold=threshold)


class GenerationAgreement(Characteristic):
    """Do the two models write the same continuations? (Beyond the paper: generated text, not teacher-forced.)"""

    name = "generation_agreement"
    title = "generation agreement, greedy continuations (beyond the paper: Dutta et al. 2024):"
    summary = "share of prompts (eval texts cut to prompt_tokens) both causal LMs continue identically for new_tokens"
    params = {"new_tokens": Param(POSITIVE_INT, 32), "prompt_tokens": Param(POSITIVE_INT, 32)}
    needs = {"eval": "eval set"}
    outputs = ("generations",)
    result_type = GenerationAgreementResult

    def measure(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                params: Mapping[str, Any], resamples: int) -> GenerationAgreementResult:
        eval_set = data["eval"]
        new_tokens, prompt_tokens = params.get("new_tokens", 32), params.get("prompt_tokens", 32)
        found = evidence.continuations(reference, candidate, eval_set, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                       check="the generation-agreement check")
        return compare_continuations(eval_set.ids, found.reference, found.candidate, found.forced_same,
                                     prompt_tokens=prompt_tokens, reference_name=reference.name,
                                     candidate_name=candidate.name, dataset=eval_set.name, task=found.task,
                                     resamples=resamples)

    def pair_params(self, result: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
        return {"new_tokens": result["new_tokens"], "prompt_tokens": result["prompt_tokens"]}

    def rows(self, *, results: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
        rows = [[r["reference"], r["candidate"], r["dataset"], r["n"], r["prompt_tokens"], r["new_tokens"], format_value(r),
                 r["identical"], number(r["first_divergence"], ".1f"), number(r["forced_top1"]), verdict_cell(r)]
                for r in results]
        headers = ["reference", "candidate", "eval", "n", "prompt", "new", "identical [95% CI]", "identical prompts",
                   "first divergence", "forced top-1", "gate"]
        return headers, rows

    def notes(self, *, results: Sequence[dict[str, Any]]) -> list[str]:
        return ["generation agreement: each prompt continued greedily and alone; first divergence: the mean index of "
                "the first differing token (new tokens for identical ones); forced top-1: the share of the reference's "
                "tokens the candidate would also choose, given the reference's text before them"] if results else []

    def examples(self, *, evidence: Evidence, reference: Model, candidate: Model, data: Mapping[str, EvalSet | None],
                 result: GenerationAgreementResult, limit: int = 5) -> list[dict[str, str]]:
        """The prompts whose continuations part earliest: the prompt and both continuations, side by side."""
        eval_set = data["eval"]
        found = evidence.continuations(reference, candidate, eval_set, prompt_tokens=result.prompt_tokens,
                                       new_tokens=result.new_tokens, check="the examples")
        where = {point: i for i, point in enumerate(eval_set.ids)}
        parted = first_divergence(found.reference, found.candidate)
        return [{"id": p, "prompt": found.prompts[where[p]], reference.name: found.reference_text[where[p]],
                 candidate.name: found.candidate_text[where[p]], "first divergence": str(int(parted[where[p]]))}
                for p in result.divergent_ids[:limit]]

    def failure(self, *, result: GenerationAgreementResult, verdict: Verdict) -> Failure:
        head = (f"{result.candidate} continues {result.n - result.identical} of the {result.n} prompts of {result.dataset} "
                f"otherwise than {result.reference} (greedy, {result.new_tokens} new tokens)")
        headers = ["metric", "threshold", "value", "n", "first divergence", "forced top-1"]
        row = [result.metric, f">= {verdict.threshold:g}", format_value(result), result.n,
               number(result.first_divergence, ".1f"), number(result.forced_top1)]
        return Failure(head, headers, row, result.divergent_ids, "ids whose continuations differ, earliest first")
