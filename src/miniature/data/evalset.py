"""An evaluation set: ids, texts and (optional) labels, with a content fingerprint."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..errors import DatasetError


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
    #: Digest of what the models see (the texts, in order): model outputs are keyed by it.
    fingerprint: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.texts:
            raise DatasetError(f"Dataset {self.name!r} has no rows")
        lengths = {len(self.ids), len(self.texts)} | {len(x) for x in (self.labels, self.ood) if x is not None}
        if len(lengths) != 1:
            raise DatasetError(f"Dataset {self.name!r} has ids, texts, labels and flags of different lengths")
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))
            raise DatasetError(f"Dataset {self.name!r} has duplicate id {dup!r}; ids must be unique")
        if not self.fingerprint:
            digest = hashlib.sha256()
            digest.update(json.dumps(self.texts).encode())
            object.__setattr__(self, "fingerprint", digest.hexdigest())

    def __len__(self) -> int:
        return len(self.texts)

    def require_labels(self, check: str) -> tuple[int | str, ...]:
        if self.labels is None:
            raise DatasetError(
                f"Dataset {self.name!r} has no label column, which {check} needs; name it with "
                f"?label=<column> in the dataset spec"
            )
        return self.labels

    def __repr__(self) -> str:
        return f"EvalSet({self.name!r}, n={len(self)})"
