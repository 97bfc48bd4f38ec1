"""Dataset specs, parsed without importing any data library.

Grammar::

    <file>.csv|.tsv|.jsonl|.json|.parquet|.txt [slice] [?text=<col>&label=<col>&id=<col>&ood=<col>&header=none&quoting=none&format=tsv]
    [hf:]<name>[:<config>]:<split>[slice]          e.g. imdb:test[:1000], glue:sst2:validation

``slice`` is ``[start:stop]`` with row numbers or percentages (``[:10%]``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import UsageError

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
OPTIONS = frozenset({"text", "label", "id", "ood", "header", "quoting", "format", "question", "answers", "choices"})
_SLICE = re.compile(r"^(?P<body>.*?)\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\]$")


@dataclass(frozen=True)
class RowSlice:
    """``[start:stop]`` over rows; ints are row numbers, strings ending in % are percentages."""

    start: str | None = None
    stop: str | None = None

    def bounds(self, n: int) -> tuple[int, int]:
        def resolve(value: str | None, default: int) -> int:
            if value is None:
                return default
            number = int(value.rstrip("%"))
            number = round(n * number / 100) if value.endswith("%") else number
            return max(0, min(n, number + n if number < 0 else number))

        return resolve(self.start, 0), resolve(self.stop, n)

    def __str__(self) -> str:
        return f"[{self.start or ''}:{self.stop or ''}]"


@dataclass(frozen=True)
class DatasetSpec:
    text: str
    source: str  # "file" or "hf"
    location: str  # absolute path, or HF dataset name
    config: str | None = None
    split: str | None = None
    rows: RowSlice = RowSlice()
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def format(self) -> str:
        return self.options.get("format") or FILE_FORMATS[Path(self.location).suffix.lower()]

    def __str__(self) -> str:
        return self.text


def parse_dataset_spec(text: str, *, base_dir: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """Parse ``text``; local files must exist. Raises :class:`UsageError` naming the spec."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(
            f"Expected a dataset spec (a .csv/.tsv/.jsonl/.json/.parquet file, or name[:config]:split[slice]) "
            f"but got {text!r}"
        )
    text = text.strip()
    body, _, query = text.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    if query and (not options or any(not k or not v for k, v in options.items())):
        raise UsageError(f"Expected options of the form ?key=value&key=value in dataset spec {text!r} but got ?{query}")
    unknown = set(options) - OPTIONS
    if unknown:
        raise UsageError(
            f"Unknown option(s) {', '.join(sorted(unknown))} in dataset spec {text!r}; expected {', '.join(sorted(OPTIONS))}"
        )
    if "format" in options and options["format"] not in set(FILE_FORMATS.values()):
        raise UsageError(
            f"Expected format= one of {', '.join(sorted(set(FILE_FORMATS.values())))} in dataset spec {text!r} "
            f"but got {options['format']!r}"
        )
    rows = RowSlice()
    match = _SLICE.match(body)
    if match:
        body, rows = match["body"], RowSlice(match["start"], match["stop"])
    elif "[" in body:
        raise UsageError(f"Expected a row slice like [:1000] or [10%:20%] in dataset spec {text!r}")

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    is_hf = body.startswith("hf:")
    path = Path(os.path.expanduser(body))
    path = path if path.is_absolute() else base / path
    if not is_hf and (Path(body).suffix.lower() in FILE_FORMATS or "format" in options or path.exists()):
        if not path.is_file():
            raise UsageError(f"Dataset file {body!r} of dataset spec {text!r} does not exist ({path.resolve()})")
        if "format" not in options and path.suffix.lower() not in FILE_FORMATS:
            raise UsageError(
                f"Cannot tell the format of dataset file {body!r}: expected one of "
                f"{', '.join(FILE_FORMATS)}, or ?format=<csv|tsv|jsonl|json|parquet>"
            )
        return DatasetSpec(text, "file", str(path.resolve()), rows=rows, options=options)

    parts = body.removeprefix("hf:").split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(
            f"Dataset spec {text!r} is neither an existing file nor a Hugging Face dataset of the form "
            f"name[:config]:split[slice] (e.g. imdb:test[:1000])"
        )
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    return DatasetSpec(text, "hf", name, config=config, split=split, rows=rows, options=options)
