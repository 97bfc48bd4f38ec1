"""Content fingerprints of model files: a cache key that changes exactly when the model does."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files that never change what a model computes.
_IGNORED_SUFFIXES = (".md", ".lock", ".metadata")
#: Files a tokenizer is made of (with config.json, which holds id2label); shared by the fingerprint and the recipes.
TOKENIZER_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "added_tokens.json",
)
#: The tokenizer files that define its vocabulary (what token i means).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                    "added_tokens.json")
_CHUNK = 1 << 20
_memo: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's content, memoised per (path, size, mtime) within the process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _memo:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        _memo[key] = digest.hexdigest()
    return _memo[key]


def directory_files(directory: Path) -> list[Path]:
    """The files of a HF model directory that determine its behaviour."""
    return sorted(
        p for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(_IGNORED_SUFFIXES)
        # The manifest records when and how a candidate was made; what changes loading
        # (its "load" options) enters the fingerprint through Backend.load_options().
        and p.name != "miniature-manifest.json"
    )


def onnx_files(model_file: Path, tokenizer_dir: Path) -> list[Path]:
    """The .onnx file, its external-data files, and the tokenizer files it is run with."""
    stem = model_file.name
    data = [p for p in model_file.parent.iterdir() if p.is_file() and p.name.startswith(stem) and p != model_file]
    tok = [tokenizer_dir / n for n in TOKENIZER_FILES if (tokenizer_dir / n).is_file()]
    return [model_file, *sorted(data), *tok]


def fingerprint(files: list[Path], extra: str = "") -> str:
    """One digest over the names and contents of ``files`` and an ``extra`` string."""
    digest = hashlib.sha256(extra.encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_digest(path).encode() + b"\0")
    return digest.hexdigest()
