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
    """The .onnx file, every external-data file its graph references, and the tokenizer files it is run with.

    External data is read from the graph itself (each tensor's ``location``), whatever the files
    are called: an export that keeps its weights in ``weights.bin`` changes the fingerprint when
    ``weights.bin`` does.
    """
    tok = [tokenizer_dir / n for n in TOKENIZER_FILES if (tokenizer_dir / n).is_file()]
    return [model_file, *external_data_files(model_file), *tok]


def external_data_files(model_file: Path) -> list[Path]:
    """The files an ONNX graph keeps tensors in (its external data), checked to exist."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    from ..errors import ModelLoadError

    try:
        graph = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"Could not read ONNX model {model_file}: {type(exc).__name__}: {exc}") from exc
    locations = set()
    for tensor in _get_all_tensors(graph):
        if uses_external_data(tensor):
            location = {entry.key: entry.value for entry in tensor.external_data}.get("location")
            if location:
                locations.add(location)
    files = sorted(model_file.parent / location for location in locations)
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"ONNX model {model_file} keeps weights in {', '.join(missing)}, which does not exist")
    return files


def parameter_count(path: Path) -> int | None:
    """Parameters stored in a weight file, read from its metadata alone: a safetensors header, an ONNX graph's
    initializers (external data not loaded); 0 for an ONNX external-data file (its graph counts them); None otherwise."""
    import json
    import struct

    if path.suffix == ".safetensors":
        with open(path, "rb") as handle:
            head = handle.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (-1,)
            if not 0 < length <= path.stat().st_size - 8:  # not a safetensors file: its load says so, not a MemoryError
                return None
            try:
                header = json.loads(handle.read(length))
                return sum(_product(t["shape"]) for k, t in header.items() if k != "__metadata__")
            except (ValueError, TypeError, KeyError, AttributeError):
                return None
    if path.suffix == ".onnx":
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        return sum(_product(t.dims) for t in graph.initializer)
    if path.suffix in (".data", "") and any(p.suffix == ".onnx" for p in path.parent.iterdir()):
        return 0
    return None


def _product(shape) -> int:
    total = 1
    for d in shape:
        total *= int(d)
    return total


def fingerprint(files: list[Path], extra: str = "") -> str:
    """One digest over the names and contents of ``files`` and an ``extra`` string."""
    digest = hashlib.sha256(extra.encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + file_digest(path).encode() + b"\0")
    return digest.hexdigest()
