"""Extractive QA (SQuAD 2.0): long contexts in overlapping windows, the best span per question, and answers.

An error is an answer that exactly matches no gold answer under the official script's
normalisation; answering an unanswerable question is an error (see :mod:`.squad`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..data import EvalSet
from ..errors import MissingOutput, ModelLoadError, NotApplicable
from ..evidence import Decisions, Model, PointDistributions
from ..models.base import Backend, forward_counter
from ..models.spans import best_span, decide
from ..outputs import ModelOutputs
from .base import Source, architectures, require_shared_tokenizer
from .classification import EncoderTask


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


def answers(outputs: ModelOutputs, null_threshold: float) -> list[str]:
    """Each question's answer: its best span, or "" (no answer) when the no-answer score beats the span's by
    more than ``null_threshold`` (SQuAD 2.0's rule)."""
    return [str(a) if decide(s, z, null_threshold) else ""
            for a, s, z in zip(outputs.answers, outputs.span_scores, outputs.null_scores)]


def correct(predicted: Sequence[str], golds: Sequence[Sequence[str]]) -> np.ndarray:
    """Which answers exactly match a gold answer (SQuAD 2.0 normalisation; "" is right only when there is none)."""
    from .squad import exact_match

    return np.array([exact_match(a, g) for a, g in zip(predicted, golds)], dtype=bool)


class QuestionAnswering(EncoderTask):
    """Extractive QA models (``*ForQuestionAnswering``) on (question, context) sets, SQuAD 2.0 rules."""

    name = "question-answering"
    title = "extractive QA"
    summary = "extractive QA models on question/context sets, SQuAD 2.0 rules (unanswerable questions included)"
    architectures = ("ForQuestionAnswering",)
    auto_class = "AutoModelForQuestionAnswering"
    head = "question-answering head"
    head_weights = ("qa_outputs",)
    unit = "windows"
    export_names = ("start_logits", "end_logits")
    export_axes = {"start_logits": {0: "batch", 1: "sequence"}, "end_logits": {0: "batch", 1: "sequence"}}

    def preprocessing(self, settings: Any) -> dict[str, Any]:
        return {"doc_stride": settings.stride, "max_answer_length": settings.max_answer_length}

    def run(self, backend: Any, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
        return run_windows(backend, eval_set.questions, eval_set.texts, batch_size=settings.batch_size,
                           max_length=settings.max_length, stride=settings.stride,
                           max_answer_length=settings.max_answer_length, progress=progress)

    def logits(self, out: Any, host: Callable[[Any], np.ndarray]) -> np.ndarray:
        """(batch, tokens, 2): the start and end logits."""
        return np.stack([host(out.start_logits), host(out.end_logits)], axis=-1)

    def onnx_head(self, outputs: Sequence[Any], *, options: dict[str, str], config: dict, spec: str,
                  declared: bool) -> dict[str, str] | None:
        """Start and end logits, (batch, tokens) each: ``?start=``/``?end=``, else outputs of those names."""
        from ..models.onnx import choose_output, describe_outputs

        names = {o.name for o in outputs}
        if not declared and not {"start_logits", "end_logits"} <= names:
            return None
        start = choose_output(outputs, options.get("start"), "start_logits", 2, spec, "start")
        end = choose_output(outputs, options.get("end"), "end_logits", 2, spec, "end")
        if start is None or end is None or start == end:
            raise ModelLoadError(
                f"ONNX model {spec!r} is a question-answering model but has no distinct start and end logits outputs "
                f"(outputs: {describe_outputs(outputs)}); name them with ?start=<name or index>&end=<name or index>"
            )
        return {"start": start, "end": end}

    def onnx_logits(self, results: dict[str, np.ndarray], head: dict[str, str]) -> np.ndarray:
        return np.stack([results[head["start"]], results[head["end"]]], axis=-1)

    def export_heads(self, out: Any) -> tuple[Any, ...]:
        return (out.start_logits, out.end_logits)

    def answers(self, source: Source, model: Model, eval_set: EvalSet, check: str) -> list[str]:
        """Each question's answer under ``model`` ("" for no answer, by the settings' null_threshold)."""
        outputs = source.outputs(model, eval_set)
        if outputs.answers is None:
            raise MissingOutput(
                f"Model {model.name!r} has no question-answering head (architectures: {architectures(source, model)}), "
                f"so it answers nothing, which {check} needs on {eval_set.name!r}; give a model fine-tuned for "
                f"extractive QA, or add ?task=question-answering to its spec if its files do not say so"
            )
        return answers(outputs, source.settings.null_threshold)

    def decisions(self, source: Source, model: Model, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        """Each question's answer; right when it exactly matches a gold answer. Scores: exact match and F1."""
        from .squad import f1_score

        golds = eval_set.require_answers(check) if gold else eval_set.answers
        predicted = self.answers(source, model, eval_set, check)
        settings = {"null_threshold": source.settings.null_threshold}
        if golds is None:
            return Decisions(self.name, tuple(predicted), None, settings=settings)
        right = correct(predicted, golds)
        f1 = float(np.mean([f1_score(a, g) for a, g in zip(predicted, golds)]))
        return Decisions(self.name, tuple(predicted), right, gold=tuple(" | ".join(g) or "(no answer)" for g in golds),
                         scores={"exact_match": float(right.mean()), "f1": f1}, settings=settings)

    def distributions(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      check: str) -> PointDistributions:
        """The same final answer text (top-1), and the first window's start and end distributions (KL)."""
        decided = [self.decisions(source, m, eval_set, check=check, gold=False) for m in (reference, candidate)]
        require_shared_tokenizer([source.backend(m) for m in (reference, candidate)], [reference.name, candidate.name],
                                 "span distributions over tokens")
        outputs = [source.outputs(m, eval_set) for m in (reference, candidate)]
        span = [np.stack([o.start_logits, o.end_logits], axis=1) for o in outputs]
        if span[0].shape != span[1].shape or not np.array_equal(np.isnan(span[0]), np.isnan(span[1])):
            raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} cut the questions into different "
                                f"windows, so their span distributions cannot be compared")
        same = np.array([a == b for a, b in zip(decided[0].predicted, decided[1].predicted)], bool)
        return PointDistributions(
            self.name, span[0], span[1], reference_correct=decided[0].correct, candidate_correct=decided[1].correct,
            same_top=same, basis={"top1": f"{self.title}: top-1 = the same final answer text",
                                  "kl": f"{self.title}: KL of the start and end distributions on each question's first "
                                        f"window, averaged"})

    def point(self, eval_set: EvalSet, index: int) -> dict[str, str]:
        return {"question": eval_set.questions[index]}
