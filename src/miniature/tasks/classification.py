"""Text classification: a prediction is the argmax of the logits; gold labels are aligned to each model's classes.

With extractive QA it makes the encoder tasks: in a run of either, a data set's shape picks which reads it
(questions and contexts: extractive QA; texts: classification), and both kinds of head are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import EvalSet, align_labels
from ..errors import MissingOutput, NotApplicable
from ..evidence import Decisions, Model, PointDistributions
from ..outputs import ModelOutputs
from . import registry
from .base import Source, Task, architectures


class EncoderTask(Task):
    """What the two encoder tasks share: the data set's shape picks the task, and both heads are read."""

    reads = ("text-classification", "question-answering")

    def reading(self, eval_set: EvalSet) -> Task:
        return registry.get("question-answering" if eval_set.is_qa else "text-classification")

    def undeclared_heads(self) -> list[Task]:
        # An ONNX graph with start and end logits is a QA model whatever the run; a classifier must say it is one.
        return [registry.get("question-answering"), registry.get("text-classification")]


def without_head() -> str:
    """What still runs on a model without a head: the checks that read embeddings only (from the registry)."""
    from ..characteristics import registry as characteristics

    names = characteristics.reading("embeddings")
    return f", or run only the checks that need no head: {', '.join(names)} (on unlabelled text too)" if names else ""


class TextClassification(EncoderTask):
    """Sequence classifiers (``*ForSequenceClassification``) on texts, with or without labels."""

    name = "text-classification"
    title = "text classification"
    summary = "sequence classifiers on texts (labels for the error sets); extractive QA reads question/context sets"
    architectures = ("ForSequenceClassification",)
    auto_class = "AutoModelForSequenceClassification"
    head = "classification head"
    head_weights = ("classifier", "score")
    class_distribution = True

    def run(self, backend: Any, eval_set: EvalSet, settings: Any, progress: Any = None) -> ModelOutputs:
        return backend.run(eval_set.texts, batch_size=settings.batch_size, max_length=settings.max_length,
                           progress=progress)

    def onnx_head(self, outputs: Sequence[Any], *, options: dict[str, str], config: dict, spec: str,
                  declared: bool) -> dict[str, str] | None:
        """The classification logits: ``?output=``, else a float (batch, labels) output, and only when the
        model has a classification head (a sentence encoder's pooled (batch, hidden) output is no logits)."""
        from ..errors import ModelLoadError
        from ..models.onnx import choose_output, describe_outputs, is_float, rank

        requested = options.get("output")
        if requested is not None:
            chosen = choose_output(outputs, requested, "logits", 2, spec, "output")
            return {"logits": chosen} if chosen else None
        labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels")
        candidates = [o for o in outputs if is_float(o) and rank(o) == 2]
        if not declared and any(o.name == "logits" for o in candidates) and config.get("architectures") is None:
            declared = True  # no config to say otherwise: an output named logits is taken at its word
        if not declared:
            return None
        named = [o for o in candidates if o.name == "logits"]
        sized = [o for o in candidates if isinstance(labels, int) and o.shape[1] == labels]
        for choice in (named, sized, candidates if len(candidates) == 1 else []):
            if choice:
                return {"logits": choice[0].name}
        raise ModelLoadError(
            f"ONNX model {spec!r} declares a classifier ({labels} labels) but no output can be its logits "
            f"(a float (batch, {labels}) output); its outputs are {describe_outputs(outputs)}: name it with "
            f"?output=<name or index>"
        )

    def head_logits(self, source: Source, model: Model, eval_set: EvalSet, check: str) -> np.ndarray:
        """``model``'s logits on ``eval_set``; a model without a classification head is named, with what still runs."""
        outputs = source.outputs(model, eval_set)
        if outputs.logits is None:
            raise MissingOutput(
                f"Model {model.name!r} has no classification head (architectures: {architectures(source, model)}), so "
                f"it makes no predictions, which {check} needs; give a fine-tuned classifier{without_head()}"
            )
        return outputs.logits

    def gold(self, source: Source, model: Model, eval_set: EvalSet, check: str) -> np.ndarray:
        """The eval set's labels as ``model``'s class indices."""
        labels = eval_set.require_labels(check)
        return align_labels(
            labels, id2label=source.backend(model).id2label,
            num_labels=int(self.head_logits(source, model, eval_set, check).shape[1]),
            label_names=eval_set.label_names, label_map=source.settings.label_map, dataset=eval_set.name,
            model=model.name,
        )

    def decisions(self, source: Source, model: Model, eval_set: EvalSet, *, check: str, gold: bool = True) -> Decisions:
        if gold:
            eval_set.require_labels(check)
        logits = self.head_logits(source, model, eval_set, check)
        names = source.backend(model).id2label or {}
        predicted = logits.argmax(axis=1)
        shown = tuple(str(names.get(int(i), int(i))) for i in predicted)
        if eval_set.labels is None:
            return Decisions(self.name, shown, None)
        labels = self.gold(source, model, eval_set, check)
        probability = source.outputs(model, eval_set).probabilities()[np.arange(len(labels)), labels]
        return Decisions(self.name, shown, predicted == labels, gold=tuple(str(label) for label in eval_set.labels),
                         gold_probability=probability)

    def distributions(self, source: Source, reference: Model, candidate: Model, eval_set: EvalSet, *,
                      check: str) -> PointDistributions:
        """Both models' logits with the candidate's classes in the reference's order (by their id2label names)."""
        ref, cand = (self.head_logits(source, m, eval_set, check) for m in (reference, candidate))
        if ref.shape[1] != cand.shape[1]:
            raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} predict {ref.shape[1]} and "
                                f"{cand.shape[1]} classes, so their output distributions cannot be compared")
        names = [source.backend(m).id2label for m in (reference, candidate)]
        classes = None
        if all(names):
            ref_names, cand_names = (tuple(n[i] for i in range(len(n))) for n in names)
            if set(ref_names) != set(cand_names):
                raise NotApplicable(f"Models {reference.name!r} and {candidate.name!r} name their classes differently "
                                    f"({', '.join(ref_names)} against {', '.join(cand_names)}), so their output "
                                    f"distributions cannot be compared")
            cand, classes = cand[:, [cand_names.index(name) for name in ref_names]], ref_names
        elif names[0]:
            classes = tuple(names[0][i] for i in range(len(names[0])))
        correct = [None, None]
        if eval_set.labels is not None:
            correct = [self.decisions(source, m, eval_set, check=check).correct for m in (reference, candidate)]
        return PointDistributions(self.name, ref, cand, reference_correct=correct[0], candidate_correct=correct[1],
                                  classes=classes)
