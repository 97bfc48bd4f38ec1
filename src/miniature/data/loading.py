"""Load a :class:`DatasetSpec` into an :class:`EvalSet`: local files through pandas, hub datasets through ``datasets``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from .evalset import EvalSet
from .qa import ANSWER_COLUMNS, CONTEXT_COLUMNS, QUESTION_COLUMNS, answer_texts, nested_qa_rows
from .spec import DatasetSpec

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "description", "context")
LABEL_COLUMNS = ("label", "labels", "sentiment", "class", "target", "score")
ID_COLUMNS = ("id", "idx", "guid")
OOD_COLUMNS = ("ood", "is_ood")
_OOD_VALUES = {"1": True, "true": True, "yes": True, "out": True, "ood": True,
               "0": False, "false": False, "no": False, "in": False, "id": False}


def load_eval_set(spec: DatasetSpec) -> EvalSet:
    """Read the rows ``spec`` names; raise :class:`DatasetError` naming what is missing."""
    nested = nested_qa_rows(Path(spec.location), spec.format, spec.text) if spec.source == "file" else None
    if nested is not None:  # SQuAD JSON or MRQA JSONL: one row per question
        columns, label_names, n = list(nested), None, len(nested["id"])
        start, stop = spec.rows.bounds(n)
        records = {c: values[start:stop] for c, values in nested.items()}
    elif spec.source == "file":
        frame = _read_file(spec)
        columns = [str(c) for c in frame.columns]
        frame.columns = columns
        n = len(frame)
        start, stop = spec.rows.bounds(n)
        records = {c: frame[c].tolist()[start:stop] for c in columns}
        label_names = None
    else:
        records, columns, label_names, n, (start, stop) = _read_hub(spec)

    question_col = _pick(spec, "question", columns, QUESTION_COLUMNS, required=False)
    # A choices column makes a multiple-choice set (causal LMs), also when its prompt is a question (ARC-style rows).
    multiple_choice = "choices" in columns
    if question_col is not None and not multiple_choice:
        return _qa_eval_set(spec, records, columns, question_col, n, start, stop)
    text_col = _pick(spec, "text", columns, TEXT_COLUMNS + ((question_col,) if multiple_choice and question_col else ()),
                     required=True)
    label_col = _pick(spec, "label", columns, LABEL_COLUMNS, required=False)
    id_col = _pick(spec, "id", columns, ID_COLUMNS, required=False)
    ood_col = _pick(spec, "ood", columns, OOD_COLUMNS, required=False)
    choices_col = _pick(spec, "choices", columns, ("choices",), required=False)

    texts, labels, ids, ood = [], [] if label_col else None, [], [] if ood_col else None
    for i, row in enumerate(range(start, stop)):  # records hold the sliced rows; ids keep the original row numbers
        text = records[text_col][i]
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"Dataset {spec.text!r}: row {row} has no text in column {text_col!r} (got {text!r})")
        texts.append(text)
        ids.append(str(records[id_col][i]) if id_col else str(row))
        if labels is not None:
            labels.append(_label(records[label_col][i], spec, row, label_col))
        if ood is not None:
            ood.append(_flag(records[ood_col][i], spec, row, ood_col))
    if not texts:
        raise DatasetError(f"Dataset {spec.text!r} has no rows in {spec.rows} (it has {n} rows)")
    names = tuple(label_names) if label_names and label_col == "label" else None
    choices = None
    if choices_col is not None:
        from .choices import gold_index, parse_choices

        choices = [parse_choices(records[choices_col][i], spec.text, row, choices_col)
                   for i, row in enumerate(range(start, stop))]
        if labels is not None:
            labels = [gold_index(label, options, spec.text, row, label_col)
                      for label, options, row in zip(labels, choices, range(start, stop))]
    return EvalSet(
        spec.text, tuple(ids), tuple(texts), tuple(labels) if labels is not None else None, names,
        tuple(ood) if ood is not None else None, choices=tuple(choices) if choices is not None else None,
    )


def _check_rows(spec: DatasetSpec, parsed: int, quoting: int, *, header: bool) -> None:
    """Warn when a delimited file parsed into fewer rows than it has lines: a stray quote merges the rows after
    it into one field (ids shift, texts run together) without any error from the parser. ``parsed`` counts rows,
    not the header, and so does the message."""
    import warnings

    from ..errors import DataWarning

    with open(spec.location, encoding="utf-8", errors="replace") as handle:
        lines = sum(1 for line in handle if line.strip())
    expected = lines - header
    if parsed < expected:
        hint = (" (a field holding a line break is quoted, so that is expected; otherwise a quote character may be "
                "unbalanced: give ?quoting=none if quotes in this file are literal text)" if quoting != csv.QUOTE_NONE
                else "")
        said = f"a header and {expected} rows" if header else f"{expected} rows"
        warnings.warn(f"Dataset {spec.text!r}: {lines} non-empty lines ({said} expected) parsed into {parsed} rows{hint}",
                      DataWarning, stacklevel=4)


def _qa_eval_set(spec: DatasetSpec, records: dict[str, list], columns: list[str], question_col: str,
                 n: int, start: int, stop: int) -> EvalSet:
    """A question-answering set: ``texts`` are the contexts, with questions and gold answers beside them."""
    context_col = _pick(spec, "text", columns, CONTEXT_COLUMNS, required=True)
    answer_col = _pick(spec, "answers", columns, ANSWER_COLUMNS, required=False)
    id_col = _pick(spec, "id", columns, ID_COLUMNS, required=False)
    questions, contexts, answers, ids = [], [], [] if answer_col else None, []
    for i, row in enumerate(range(start, stop)):
        question, context = records[question_col][i], records[context_col][i]
        for value, column in ((question, question_col), (context, context_col)):
            if not isinstance(value, str) or not value.strip():
                raise DatasetError(f"Dataset {spec.text!r}: row {row} has no text in column {column!r} (got {value!r})")
        questions.append(question)
        contexts.append(context)
        ids.append(str(records[id_col][i]) if id_col else str(row))
        if answers is not None:
            answers.append(answer_texts(records[answer_col][i], spec.text, row))
    if not contexts:
        raise DatasetError(f"Dataset {spec.text!r} has no rows in {spec.rows} (it has {n} rows)")
    return EvalSet(spec.text, tuple(ids), tuple(contexts), questions=tuple(questions),
                   answers=tuple(answers) if answers is not None else None)


def _read_file(spec: DatasetSpec):
    import pandas as pd

    header = 0 if spec.options.get("header", "true").lower() not in ("none", "false", "0", "no") else None
    quoting = csv.QUOTE_NONE if spec.options.get("quoting", "").lower() in ("none", "off", "false") else csv.QUOTE_MINIMAL
    fmt = spec.format
    try:
        if fmt in ("csv", "tsv"):
            frame = pd.read_csv(
                spec.location, sep="\t" if fmt == "tsv" else ",", header=header, quoting=quoting,
                dtype=object, keep_default_na=False,
            )
            _check_rows(spec, len(frame), quoting, header=header is not None)
            return frame
        if fmt == "jsonl":
            return pd.read_json(spec.location, lines=True, dtype=False)
        if fmt == "json":
            return pd.read_json(spec.location, dtype=False)
        return pd.read_parquet(spec.location)
    except Exception as exc:
        raise DatasetError(f"Could not read dataset file {spec.location} as {fmt} (spec {spec.text!r}): {exc}") from exc


def _read_hub(spec: DatasetSpec) -> tuple[dict[str, list], list[str], list[str] | None, int, tuple[int, int]]:
    """The slice's rows as columns, the column names, ClassLabel names, the split's size and the slice's bounds."""
    import datasets

    try:
        data = datasets.load_dataset(spec.location, spec.config, split=spec.split)
    except Exception as exc:
        raise DatasetError(
            f"Could not load Hugging Face dataset {spec.location!r} (config {spec.config!r}, split {spec.split!r}; "
            f"spec {spec.text!r}): {type(exc).__name__}: {exc}. Offline, use a local file or a dataset in the local HF cache."
        ) from exc
    feature = data.features.get("label")
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    start, stop = spec.rows.bounds(len(data))
    # Select before converting: only the asked rows become Python objects, however large the split.
    return data.select(range(start, stop)).to_dict(), list(data.column_names), names, len(data), (start, stop)


def _pick(spec: DatasetSpec, role: str, columns: list[str], candidates: tuple[str, ...], *, required: bool) -> str | None:
    asked = spec.options.get(role)
    if asked is not None:
        if asked in columns:
            return asked
        if asked.isdigit() and int(asked) < len(columns):
            return columns[int(asked)]
        raise DatasetError(
            f"Dataset {spec.text!r} has no {role} column {asked!r}; its columns are {', '.join(columns)}"
        )
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if required:
        raise DatasetError(
            f"Dataset {spec.text!r} has no {role} column: expected one named {', '.join(candidates)} "
            f"(any case) or ?{role}=<column> in the spec; its columns are {', '.join(columns)}"
        )
    return None


def _label(value: Any, spec: DatasetSpec, row: int, column: str) -> int | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
    elif isinstance(value, str) and value.strip():
        stripped = value.strip()
        return int(stripped) if stripped.lstrip("-").isdigit() else stripped
    elif hasattr(value, "item"):  # numpy scalars
        return _label(value.item(), spec, row, column)
    raise DatasetError(f"Dataset {spec.text!r}: row {row} has no usable label in column {column!r} (got {value!r})")


def _flag(value: Any, spec: DatasetSpec, row: int, column: str) -> bool:
    key = str(value.item() if hasattr(value, "item") else value).strip().lower()
    if key not in _OOD_VALUES:
        raise DatasetError(
            f"Dataset {spec.text!r}: row {row} has {value!r} in its in/out column {column!r}; expected one of "
            f"{', '.join(_OOD_VALUES)} (true = out-of-distribution)"
        )
    return _OOD_VALUES[key]
