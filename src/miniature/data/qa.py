"""Extractive question-answering data: SQuAD-format JSON, MRQA-format JSONL, and flat rows.

Every format becomes flat rows with the columns ``id``, ``question``, ``context`` and
``answers`` (a list of answer strings; empty for an unanswerable SQuAD 2.0 question), which
:func:`~miniature.data.loading.load_eval_set` turns into a QA :class:`EvalSet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DatasetError

QUESTION_COLUMNS = ("question", "questions", "query")
CONTEXT_COLUMNS = ("context", "passage", "paragraph")
ANSWER_COLUMNS = ("answers", "answer", "answer_text")


def nested_qa_rows(path: Path, fmt: str, spec_text: str) -> dict[str, list] | None:
    """Flat QA columns when ``path`` is SQuAD JSON (``fmt="json"``) or MRQA JSONL (``"jsonl"``); else None."""
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DatasetError(f"Could not read dataset file {path} as JSON (spec {spec_text!r}): {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            return _squad_rows(data["data"], path, spec_text)
        return None
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as handle:
            first = next((line for line in handle if line.strip()), "")
        try:
            record = json.loads(first) if first else {}
        except json.JSONDecodeError:
            return None  # not JSONL at all: the generic reader says so
        if isinstance(record, dict) and ("header" in record or ("qas" in record and "context" in record)):
            return _mrqa_rows(path, spec_text)
    return None


def _squad_rows(articles: list[Any], path: Path, spec_text: str) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "question": [], "context": [], "answers": []}
    try:
        for article in articles:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows["id"].append(str(qa["id"]))
                    rows["question"].append(qa["question"])
                    rows["context"].append(paragraph["context"])
                    # SQuAD 2.0: unanswerable questions have no answers (their "plausible_answers" are not gold).
                    rows["answers"].append([] if qa.get("is_impossible") else [a["text"] for a in qa["answers"]])
    except (KeyError, TypeError) as exc:
        raise DatasetError(
            f"Dataset file {path} (spec {spec_text!r}) looks like SQuAD JSON (a top-level 'data' list) but an entry "
            f"lacks {exc}: expected data[].paragraphs[].{{context, qas[].{{id, question, answers[].text}}}}"
        ) from exc
    return rows


def _mrqa_rows(path: Path, spec_text: str) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "question": [], "context": [], "answers": []}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if "header" in record:
                    continue
                for qa in record["qas"]:
                    rows["id"].append(str(qa.get("qid") or qa.get("id")))
                    rows["question"].append(qa["question"])
                    rows["context"].append(record["context"])
                    rows["answers"].append([] if qa.get("is_impossible") else list(qa.get("answers") or []))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(
                    f"Dataset file {path} line {number} (spec {spec_text!r}) is not an MRQA record: {exc}; "
                    f"expected {{context, qas[].{{qid, question, answers}}}}"
                ) from exc
    return rows


def answer_texts(value: Any, spec_text: str, row: int) -> tuple[str, ...]:
    """Gold answers of one row: SQuAD/HF ``{"text": [...]}``, a list of strings or of ``{"text": ...}``, or a string."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict) and "text" in value:
        value = value["text"]
        if hasattr(value, "tolist"):
            value = value.tolist()
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        texts = [v["text"] if isinstance(v, dict) and "text" in v else v for v in value]
        if all(isinstance(t, str) for t in texts):
            return tuple(texts)
    raise DatasetError(
        f"Dataset {spec_text!r}: row {row} has answers {value!r}; expected a list of answer strings, "
        f"{{'text': [...]}} (SQuAD / squad_v2), or an empty list for an unanswerable question"
    )
