"""An evaluation set: ids, texts and (optional) labels, with a content fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import DatasetError, MissingGold


@dataclass(frozen=True)
class EvalSet:
    """Texts to run every model on, in a fixed order.

    ``labels`` are the dataset's raw gold values (ints or strings) or ``None`` for
    unlabelled data; ``label_names`` are class names when the dataset declares them
    (a Hugging Face ``ClassLabel``), so int label ``i`` means ``label_names[i]``.
    """

    name: str
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    labels: tuple[int | str, ...] | None = None
    label_names: tuple[str, ...] | None = None
    #: For challenge sets: which points are truly out-of-distribution, when the data says.
    ood: tuple[bool, ...] | None = None
    #: Extractive QA: each point's question (``texts`` are then the contexts) and its gold
    #: answers (an empty tuple: unanswerable, as in SQuAD 2.0).
    questions: tuple[str, ...] | None = None
    answers: tuple[tuple[str, ...], ...] | None = None
    #: Multiple choice for causal LMs: each row's choices, continuations of its text (``labels`` are then
    #: the index of the gold choice).
    choices: tuple[tuple[str, ...], ...] | None = None
    #: Digest of what the models see (the texts, in order): model outputs are keyed by it.
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.texts:
            raise DatasetError(f"Dataset {self.name!r} has no rows")
        lengths = {len(self.ids), len(self.texts)} | {
            len(x) for x in (self.labels, self.ood, self.questions, self.answers, self.choices) if x is not None
        }
        if len(lengths) != 1:
            raise DatasetError(f"Dataset {self.name!r} has ids, texts, labels and flags of different lengths")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))
            raise DatasetError(f"Dataset {self.name!r} has duplicate id {dup!r}; ids must be unique")
        if not self.fingerprint:
            digest = hashlib.sha256()
            # Questions are part of what a QA model sees (a plain set's digest is unchanged).
            digest.update(json.dumps(self.texts if self.questions is None else [self.questions, self.texts]).encode())
            if self.choices is not None:  # a multiple-choice model also reads every choice
                digest.update(json.dumps(self.choices).encode())
            object.__setattr__(self, "fingerprint", digest.hexdigest())

    @cached_property
    def content_key(self) -> str:
        """Digest of everything the set holds (name, ids, texts, labels, flags, answers), where ``fingerprint``
        covers what the models see: derived values that depend on ids or labels are memoised by this one."""
        fields = [self.name, self.ids, self.texts, self.labels, self.label_names, self.ood, self.questions, self.answers,
                  *([self.choices] if self.choices is not None else [])]
        return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_qa(self) -> bool:
        return self.questions is not None

    @property
    def is_multiple_choice(self) -> bool:
        return self.choices is not None

    @property
    def inputs(self) -> list[str] | list[tuple[str, str]]:
        """What a model reads per point: the text, or (question, context) for QA."""
        return list(zip(self.questions, self.texts)) if self.questions is not None else list(self.texts)

    def require_answers(self, check: str) -> tuple[tuple[str, ...], ...]:
        if self.answers is None:
            raise MissingGold(
                f"Dataset {self.name!r} has no gold answers, which {check} needs on a question-answering set; "
                f"name the column with ?answers=<column> in the dataset spec"
            )
        return self.answers

    def require_labels(self, check: str) -> tuple[int | str, ...]:
        if self.labels is None:
            raise MissingGold(
                f"Dataset {self.name!r} has no label column, which {check} needs; name it with "
                f"?label=<column> in the dataset spec"
            )
        return self.labels

    def __repr__(self) -> str:
        return f"EvalSet({self.name!r}, n={len(self)})"
