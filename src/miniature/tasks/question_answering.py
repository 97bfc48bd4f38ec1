"""Extractive QA (SQuAD 2.0): long contexts in overlapping windows, the best span per question, and answers.

An error is an answer that exactly matches no gold answer under the official script's
normalisation; answering an unanswerable question is an error (see characteristics/squad.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import MissingOutput, ModelLoadError
from ..models.base import Backend, forward_counter
from ..models.spans import best_span
from ..outputs import ModelOutputs
from .classification import architectures


def run_windows(
    backend: Backend,
    questions: Sequence[str],
    contexts: Sequence[str],
    *,
    batch_size: int,
    max_length: int,
    stride: int,
    max_answer_length: int,
    progress: Callable[[int, int], None] | None = None,
) -> ModelOutputs:
    """Extractive QA over (question, context) pairs, long contexts in overlapping windows.

    Each context is cut into windows of at most ``max_length`` tokens (question included)
    overlapping by ``stride`` tokens. A question's answer is its best span over all its
    windows (:func:`~miniature.models.spans.best_span`); its no-answer score is the lowest
    [CLS] score over them (the convention of transformers' SQuAD 2.0 post-processing). The
    embeddings are those of each question's first window. A model without a QA head gives
    embeddings only.
    """
    limit = backend.limit(max_length)
    try:
        encoded = backend.tokenizer(
            list(questions), list(contexts), truncation="only_second", max_length=limit, stride=stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding=False,
        )
    except Exception as exc:  # e.g. a question longer than the window, or a stride too large for it
        raise ModelLoadError(
            f"Model {backend.spec.name!r} could not cut (question, context) pairs into {limit}-token windows with "
            f"stride {stride}: {type(exc).__name__}: {exc}. Lower doc_stride or raise max_length."
        ) from exc
    if "overflow_to_sample_mapping" not in encoded:
        raise ModelLoadError(f"Model {backend.spec.name!r} needs a fast tokenizer for question answering (offsets, windows)")
    owner = np.asarray(encoded["overflow_to_sample_mapping"])
    n = len(questions)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    first_window = np.unique(owner, return_index=True)[1]  # windows are in question order
    answers, span_scores, null_scores = [""] * n, np.full(n, -np.inf), np.full(n, np.inf)
    cls, mean, has_head = [None] * n, [None] * n, False
    # Each question's first-window start and end logits (NaN past the window's end): output agreement
    # compares the two models' span distributions there.
    width = max((len(encoded["input_ids"][w]) for w in first_window), default=0)
    first_start, first_end = np.full((n, width), np.nan, np.float32), np.full((n, width), np.nan, np.float32)
    done = 0
    for index, logits, pooled in backend.forward_batches(backend.batches(encoded, keys, batch_size), True):
        for row, w in enumerate(index):
            q = owner[w]
            if w == first_window[q] and pooled is not None:
                cls[q], mean[q] = pooled[0][row], pooled[1][row]
            if logits is None or np.ndim(logits) != 3:  # no QA head (a classifier gives (batch, labels))
                continue
            has_head = True
            length = len(encoded["input_ids"][w])
            start, end = np.asarray(logits[row, :length, 0]), np.asarray(logits[row, :length, 1])
            if w == first_window[q]:
                first_start[q, :length], first_end[q, :length] = start, end
            context = np.array([sid == 1 for sid in encoded.sequence_ids(w)])
            i, j, score = best_span(start, end, context, max_answer_length)
            null_scores[q] = min(null_scores[q], float(start[0] + end[0]))
            if score > span_scores[q]:
                offsets = encoded["offset_mapping"][w]
                answers[q], span_scores[q] = contexts[q][offsets[i][0] : offsets[j][1]], score
        done += len(index)
        if progress is not None:
            progress(done, len(owner))
    forward_counter.runs += 1
    stack = lambda parts: np.stack(parts).astype(np.float32) if all(p is not None for p in parts) else None  # noqa: E731
    return ModelOutputs(
        logits=None, cls=stack(cls), mean=stack(mean),
        answers=np.array(answers, dtype=str) if has_head else None,
        span_scores=span_scores if has_head else None, null_scores=null_scores if has_head else None,
        start_logits=first_start if has_head else None, end_logits=first_end if has_head else None,
    )


def answers(engine: Any, model: Any, eval_set: EvalSet, check: str) -> list[str]:
    """Each question's answer under ``model`` ("" for no answer, by the settings' null_threshold)."""
    outputs = engine.outputs(model, eval_set)
    if outputs.answers is None:
        raise MissingOutput(
            f"Model {model.name!r} has no question-answering head (architectures: {architectures(engine, model)}), so it "
            f"answers nothing, which {check} needs on {eval_set.name!r}; give a model fine-tuned for extractive "
            f"QA, or add ?task=question-answering to its spec if its files do not say so"
        )
    return outputs.qa_predictions(engine.settings.null_threshold)


def correct(answers: list[str], golds: tuple[tuple[str, ...], ...]) -> np.ndarray:
    """Which answers exactly match a gold answer (SQuAD 2.0 normalisation; "" is right only when there is none)."""
    from ..characteristics.squad import exact_match

    return np.array([exact_match(a, g) for a, g in zip(answers, golds)], dtype=bool)
