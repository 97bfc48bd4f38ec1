"""Match a dataset's gold labels to each model's class indices (its ``id2label``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import LabelMismatchError

_GENERIC = re.compile(r"^LABEL_\d+$")


def align_labels(
    labels: Sequence[int | str],
    *,
    id2label: Mapping[int, str] | None,
    num_labels: int,
    label_names: Sequence[str] | None = None,
    label_map: Mapping[str, int | str] | None = None,
    dataset: str = "dataset",
    model: str = "model",
) -> np.ndarray:
    """Return the model class index of every gold label.

    An int label is first named by the dataset's own ``label_names`` (a ``ClassLabel``),
    then translated by ``label_map`` (dataset label -> model label name or index) when
    given. Ints are class indices; strings match the model's label names, ignoring case.
    """
    names = {v.lower(): k for k, v in (id2label or {}).items()}
    generic = not names or all(_GENERIC.match(v) for v in (id2label or {}).values())
    cache: dict[int | str, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, raw in enumerate(labels):
        if raw not in cache:
            cache[raw] = _one(raw, names, generic, num_labels, label_names, label_map, dataset, model, id2label)
        out[i] = cache[raw]
    return out


def _one(raw, names, generic, num_labels, label_names, label_map, dataset, model, id2label) -> int:
    target: int | str = raw
    if label_names is not None and isinstance(raw, int) and 0 <= raw < len(label_names):
        target = label_names[raw]
    if label_map is not None:
        key = next((k for k in (str(target), str(raw)) if k in label_map), None)
        if key is None:
            raise LabelMismatchError(
                f"label_map has no entry for label {target!r} of dataset {dataset!r}; it maps "
                f"{', '.join(map(repr, label_map))}"
            )
        target = label_map[key]
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, int):
        if not 0 <= target < num_labels:
            raise LabelMismatchError(
                f"Label {raw!r} of dataset {dataset!r} is class index {target}, but model {model!r} has "
                f"{num_labels} classes (0..{num_labels - 1})"
            )
        return target
    if target.lower() in names and not generic:
        return names[target.lower()]
    known = ", ".join(f"{k}={v}" for k, v in sorted((id2label or {}).items()))
    hint = "its labels are unnamed, so " if generic else ""
    raise LabelMismatchError(
        f"Label {raw!r} of dataset {dataset!r} matches no label of model {model!r} ({known or 'no id2label'}); "
        f'{hint}map dataset labels to model labels with label_map (e.g. label_map = {{ "{raw}" = 1 }} in '
        f"[tool.miniature])"
    )
