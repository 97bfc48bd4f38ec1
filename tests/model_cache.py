"""Models the tests build, cached on disk, so that a second run of the suite trains and compresses nothing.

An entry is keyed by the source code of its builder and of the helpers it names, the library modules that
train and compress (``miniature.finetune``, ``compress``, ``tiny_lm``, ``gguf_recipe``), the versions of the libraries
that write the files, and the builder's arguments: change any of them and the entry is built anew. It is
built in a temporary folder and renamed into place under a file lock, so an interrupted build leaves
nothing behind and pytest-xdist's workers build each entry once.

The cache lives in ``.pytest_cache/miniature-models`` beside the tests (``MINIATURE_TEST_MODELS`` moves it;
``--cache-clear`` empties it, as it empties pytest's own cache).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: The library modules whose code decides what a built model holds.
LIBRARY = ("finetune.py", "compress.py", "tiny_lm.py", "gguf_recipe.py")
VERSIONS = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy", "safetensors")
_COMPLETE = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("MINIATURE_TEST_MODELS") or REPO / ".pytest_cache" / "miniature-models")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def entry_key(name: str, builder: Callable[..., Any], helpers: tuple[Callable[..., Any], ...], args: dict[str, Any]) -> str:
    """The digest of everything that decides what ``builder`` writes."""
    library = REPO / "src" / "miniature"
    parts = {
        "name": name,
        "sources": [inspect.getsource(f) for f in (builder, *helpers)],
        "library": [hashlib.sha256((library / f).read_bytes()).hexdigest() for f in LIBRARY],
        "versions": {v: _version(v) for v in VERSIONS},
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in sorted(args.items())},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cached(name: str, builder: Callable[..., Any], *helpers: Callable[..., Any], **args: Any) -> Path:
    """The folder ``builder(folder, **args)`` fills, built once for its key and reused by every later run.

    ``helpers``: functions the builder calls whose code also decides what it writes (the tests' own training
    functions); the library modules are keyed in any case.
    """
    from filelock import FileLock

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"{name}-{entry_key(name, builder, helpers, args)}"
    if (folder / _COMPLETE).is_file():
        return folder
    with FileLock(str(folder) + ".lock"):
        if (folder / _COMPLETE).is_file():  # another worker built it while this one waited
            return folder
        shutil.rmtree(folder, ignore_errors=True)  # a build that was interrupted before its rename
        building = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-"))
        try:
            builder(building, **args)
            (building / _COMPLETE).write_text(json.dumps({"name": name, "args": {k: str(v) for k, v in args.items()}}))
            os.replace(building, folder)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return folder


def clear() -> None:
    """Forget every cached model (``pytest --cache-clear``)."""
    shutil.rmtree(cache_root(), ignore_errors=True)
