"""Causal language models: every position of a text predicts its next token, long texts in sliding windows.

What one model keeps per text (small: no distribution over the vocabulary is kept): the
log-probability of each actual next token, its own top token at each position, and the mean and
last-token embeddings of the first window. On multiple-choice data, each choice's summed
log-likelihood as a continuation of the text (:mod:`.multiple_choice`). What a pair of models keeps
(KL, top-1 agreement) is computed with both read side by side (:mod:`.causal_lm_pairs`); windows and
batches are :mod:`.token_windows`'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import MissingOutput
from ..evidence import Continuations, Decisions, Model, PositionStatistics
from ..models.base import Backend, forward_counter
from ..outputs import ModelOutputs
from . import generation, multiple_choice
from .base import Source, Task, require_shared_tokenizer
from .causal_lm_pairs import PairPlan, merge, plan_pair, shard_statistics
from .token_windows import (
    chunks,
    log_probabilities,
    overlap_of,
    picked,
    predicted_rows,
    segments,
    stream,
    tokenize,
    window_size,
    windows_per_batch,
)


def run(backend: Backend, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
    """One model over ``eval_set``: per-position log-probabilities of the actual tokens, top tokens, embeddings
    (and each choice's log-likelihood on multiple-choice data); ``progress(done, total)`` after each window."""
    name = backend.spec.name
    ids = tokenize(backend, eval_set.texts, settings.max_length)
    window = window_size([backend], settings.max_length)
    overlap = overlap_of(window, settings.doc_stride)
    counts = np.array([max(0, len(t) - 1) for t in ids], dtype=np.int64)
    width = int(counts.max(initial=0))
    logprobs, tops = np.zeros((len(ids), width)), np.full((len(ids), width), -1, dtype=np.int64)
    mean, last = [None] * len(ids), [None] * len(ids)
    pieces = segments(ids, window, overlap)
    per_batch = windows_per_batch([backend], window, settings.logits_memory)
    for done, (piece, (logits,), (hidden,)) in enumerate(stream([backend], ids, pieces, batch_size=per_batch,
                                                                need_hidden=True, model_names=[name]), 1):
        rows, targets = predicted_rows(piece, logits), np.asarray(ids[piece.text][piece.first:piece.stop])
        at = slice(piece.first - 1, piece.stop - 1)  # where the segment's positions go in the text's row
        for part in chunks(len(rows), logits.shape[-1]):
            log_p = log_probabilities(rows[part], name, eval_set, piece.text)
            logprobs[piece.text, at][part] = picked(log_p, targets[part])
            tops[piece.text, at][part] = log_p.argmax(-1).numpy()
        if piece.start == 0 and hidden is not None:  # a text's embedding: its first window, as QA does
            mean[piece.text], last[piece.text] = hidden.mean(axis=0), hidden[-1]
        if progress is not None:
            progress(done, len(pieces))
    forward_counter.runs += 1
    scores = multiple_choice.choice_scores(backend, eval_set, settings, window) if eval_set.is_multiple_choice else None
    stack = lambda parts: np.stack(parts) if all(p is not None for p in parts) else None  # noqa: E731
    return ModelOutputs(logits=None, cls=None, mean=stack(mean), last=stack(last), token_counts=counts,
                        token_logprobs=logprobs, top_tokens=tops, choice_scores=scores)


class CausalLanguageModelling(Task):
    """Causal language models (``*ForCausalLM``, ``GPT2LMHeadModel``) on texts, read token by token: output
    agreement per token position, multiple-choice rows for the error sets, pooled hidden states for embeddings."""

    name = "causal-lm"
    title = "causal LMs"
    summary = ("causal language models on texts, token by token (KL, top-1, perplexity); multiple-choice rows "
               "(context, choices, label) for the error sets")
    architectures = ("ForCausalLM", "LMHeadModel")  # GPT-2 says GPT2LMHeadModel
    reads = ("causal-lm",)
    auto_class = "AutoModelForCausalLM"
    head = "language-modelling head"
    head_weights = ("lm_head",)
    pooling = "mean"
    unit = "windows"
    batched = False  # windows are read token by token, and a pair's statistics need both models side by side
    unattackable = ("The adversarial-vulnerability check attacks a classifier's predicted label (BERT-Attack); a causal "
                    "LM predicts next tokens, so it does not apply to task = \"causal-lm\"")
    produces = ("predictions", "embeddings", "generations")
    export_axes = {"logits": {0: "batch", 1: "sequence"}}
    export_options = {"use_cache": False}  # a key/value cache is for generation; the graph maps tokens to logits

    def preprocessing(self, settings: Any) -> dict[str, Any]:
        # The windows' overlap over long texts, and how many share a batch (float kernels round by the batch).
        return {"doc_stride": settings.doc_stride, "logits_memory": settings.logits_memory}

    def run(self, backend: Any, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
        if backend.task is not self and backend.spec.backend != "onnx":  # read headless: no next-token logits
            raise self.not_a_language_model(backend)
        return run(backend, eval_set, settings, progress)

    def not_a_language_model(self, backend: Any) -> MissingOutput:
        said = ", ".join(backend.config().get("architectures") or []) or "not stated"
        return MissingOutput(f"Model {backend.spec.name!r} is not a causal language model (architectures: {said}), "
                             f"which task = \"causal-lm\" reads; give a causal LM (*ForCausalLM, GPT2LMHeadModel), or "
                             f"add ?task=causal-lm to its spec if its files do not say it is one")

    def onnx_head(self, outputs: Sequence[Any], *, options: dict[str, str], config: dict, spec: str,
                  declared: bool) -> dict[str, str] | None:
        """Next-token logits: a float (batch, tokens, vocabulary) output, ``?output=`` or the one named logits."""
        from ..models.onnx import choose_output

        chosen = choose_output(outputs, options.get("output"), "logits", 3, spec, "output")
        return {"logits": chosen} if chosen else None

    def export_context(self, model: Any) -> Any:
        return traceable_causal_masks(model)

    def decisions(self, source: Source, model: Model, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        return multiple_choice.decisions(self.name, source, model, eval_set, check=check, gold=gold)

    def distributions(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      check: str) -> PositionStatistics:
        return source.pair_statistics(reference, candidate, eval_set)

    def check_pair(self, backends: Sequence[Any], names: Sequence[str]) -> None:
        from . import registry

        for backend in backends:  # a model of another task first: its tokenizer is not what is wrong with it
            declared = registry.declared(backend.config(), backend.spec.options.get("task"))
            if declared is not None and not self.reads_head_of(declared):
                raise self.not_a_language_model(backend)
        require_shared_tokenizer(backends, names, "next-token distributions")

    def continuations(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      prompt_tokens: int, new_tokens: int, check: str) -> Continuations:
        """Both models continue the same prompts: cut for the window both can read (so neither's prompt is longer)."""
        backends = [source.backend(m) for m in (reference, candidate)]
        self.check_pair(backends, [reference.name, candidate.name])
        cut = min(prompt_tokens, window_size(backends, source.settings.max_length) - new_tokens + 1)
        ref, cand = (source.generations(m, eval_set, prompt_tokens=max(1, cut), new_tokens=new_tokens)
                     for m in (reference, candidate))
        forced = source.followed(reference, candidate, eval_set, prompt_tokens=max(1, cut), new_tokens=new_tokens)
        return Continuations(self.name, tuple(map(str, ref["prompt_text"])), ref["generated"], cand["generated"],
                             tuple(map(str, ref["text"])), tuple(map(str, cand["text"])), forced)

    def generation_prompts(self, backend: Any, eval_set: EvalSet, settings: Any, *, prompt_tokens: int,
                           new_tokens: int) -> list[list[int]]:
        return generation.prompts(backend, eval_set, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                                  max_length=settings.max_length)

    def generate(self, backend: Any, starts: Sequence[Sequence[int]], new_tokens: int, eval_set: EvalSet,
                 progress: Any = None) -> np.ndarray:
        if backend.task is not self and backend.spec.backend != "onnx":
            raise self.not_a_language_model(backend)
        return generation.generate(backend, starts, new_tokens, eval_set, progress)

    def follow(self, backend: Any, starts: Sequence[Sequence[int]], continuations: np.ndarray, eval_set: EvalSet) -> np.ndarray:
        if backend.task is not self and backend.spec.backend != "onnx":
            raise self.not_a_language_model(backend)
        return generation.follow(backend, starts, continuations, eval_set)

    def pair_plan(self, backends: Sequence[Any], names: Sequence[str], eval_set: EvalSet, settings: Any) -> PairPlan:
        return plan_pair(list(backends), list(names), eval_set, settings)

    def pair_shard(self, backends: Sequence[Any], names: Sequence[str], batches: list, work: Any,
                   eval_set: EvalSet) -> dict[int, Any]:
        return shard_statistics(list(backends), list(names), batches, work, eval_set)

    def pair_merge(self, plan: PairPlan, parts: dict[int, Any]) -> PositionStatistics:
        return merge(plan, parts, self.name)


@contextlib.contextmanager
def traceable_causal_masks(model: Any):
    """transformers builds a decoder's attention mask with ``torch.vmap``, which the TorchScript tracer cannot
    follow; while exporting, a plain causal mask with the padding folded in takes its place. Only a plain causal
    decoder (GPT-2, Llama) gets the same mask from it: sliding-window or chunked attention is refused."""
    import torch
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    if getattr(model.config, "sliding_window", None) or getattr(model.config, "attention_chunk_size", None):
        raise ValueError(f"export_onnx exports plain causal attention only; {type(model).__name__} attends through "
                         f"a sliding window or in chunks")

    def allowed(batch_size: int, cache_position: Any, kv_length: int, kv_offset: int = 0, attention_mask: Any = None,
                **_: Any) -> Any:
        keys = torch.arange(kv_length) + kv_offset
        mask = (keys[None, :] <= cache_position[:, None])[None, None].expand(batch_size, 1, -1, -1)
        if attention_mask is not None:
            mask = mask & attention_mask[:, None, None, -kv_length:].bool()
        return mask

    def additive(*args: Any, dtype: Any = torch.float32, **kwargs: Any) -> Any:
        return torch.where(allowed(*args, **kwargs), torch.tensor(0.0, dtype=dtype), torch.finfo(dtype).min)

    ALL_MASK_ATTENTION_FUNCTIONS["sdpa"], ALL_MASK_ATTENTION_FUNCTIONS["eager"] = allowed, additive
    try:
        yield
    finally:
        del ALL_MASK_ATTENTION_FUNCTIONS["sdpa"], ALL_MASK_ATTENTION_FUNCTIONS["eager"]
