"""Multiple-choice rows for causal LMs: each row's choices, and its gold choice as an index.

A ``choices`` column holds a JSON list of strings (``["negative", "positive"]``; parquet and JSON
files may hold the list itself) or the choices separated by ``|`` (``negative|positive``). The
label is the gold choice's index (0-based) or the gold choice's own text. A choice is read as a
continuation of the row's text exactly as written, so a leading space belongs in the choice
(lm-evaluation-harness writes ``" positive"``); JSON keeps such spaces, ``|`` keeps them too.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import DatasetError


def parse_choices(value: Any, dataset: str, row: int, column: str) -> tuple[str, ...]:
    """One row's choices, from a list or a JSON list or a ``|``-separated string."""
    if hasattr(value, "tolist"):  # a numpy array from parquet
        value = value.tolist()
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"Dataset {dataset!r}: row {row} has choices {value!r:.80} in column {column!r} that "
                               f"start like a JSON list but do not parse ({exc})") from exc
    elif isinstance(value, str):
        value = value.split("|")
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c.strip() for c in value):
        raise DatasetError(f"Dataset {dataset!r}: row {row} has {value!r:.80} in its choices column {column!r}; expected "
                           f"at least two non-empty choices, as a JSON list of strings or separated by |")
    # Two choices that read alike (as a label names them: stripped) cannot tell the gold one apart.
    seen: dict[str, int] = {}
    for i, choice in enumerate(value):
        first = seen.setdefault(choice.strip(), i)
        if first != i:
            raise DatasetError(f"Dataset {dataset!r}: row {row} has the choice {value[first]!r} more than once (choices "
                               f"{first} and {i} of {value!r:.80}) in its choices column {column!r}; expected distinct "
                               f"choices: a repeated one can never be picked apart from its copy")
    return tuple(value)


def gold_index(label: int | str, choices: tuple[str, ...], dataset: str, row: int, column: str | None) -> int:
    """The gold choice's index: the label itself (0-based), or the position of the choice it names."""
    if isinstance(label, int) and 0 <= label < len(choices):
        return label
    if isinstance(label, str):
        named = [i for i, c in enumerate(choices) if c.strip() == label.strip()]
        if len(named) == 1:
            return named[0]
    raise DatasetError(f"Dataset {dataset!r}: row {row} has label {label!r} in column {column!r}, which names none of its "
                       f"{len(choices)} choices {list(choices)!r}; expected a 0-based index below {len(choices)} or one "
                       f"choice's text")
