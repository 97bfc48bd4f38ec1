"""Content-addressed, on-disk store of model outputs.

An entry is keyed by (model fingerprint, dataset fingerprint, task, preprocessing), so
a re-run with nothing changed runs no model. Writes are atomic (write, fsync, rename):
an interrupted run leaves no half-written entry. An unreadable entry is moved aside
(``*.corrupt``), reported with a :class:`CacheWarning`, and recomputed. A cache folder this
process cannot write (one filled by another job and shared read-only) is read, never written
nor locked, with one :class:`CacheWarning`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import set_aside, write_atomic
from .errors import CacheWarning
from .outputs import ModelOutputs

FORMAT_VERSION = 4  # 2: mean-pooled embeddings; 3: QA answer spans; 4: QA first-window start/end logits
_ARRAYS = ("logits", "cls", "mean", "answers", "span_scores", "null_scores", "start_logits", "end_logits",
           "last", "token_counts", "token_logprobs", "top_tokens", "choice_scores")


def usable(directory: Path) -> bool:
    """Check, before any model runs, that the cache folder exists or can be made; whether it can be written
    (an existing folder that can only be read is read, and nothing is written to it)."""
    from .errors import UsageError

    fix = "give another with --miniature-cache-dir (cache_dir) or turn it off with --miniature-no-cache"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"The cache folder {directory} is a file, or lies under one; {fix}") from None
    except OSError as exc:
        raise UsageError(f"The cache folder {directory} cannot be made ({exc.strerror}); {fix}") from None
    if os.access(directory, os.W_OK | os.X_OK):
        return True
    if not os.access(directory, os.R_OK | os.X_OK):
        raise UsageError(f"The cache folder {directory} can be neither written nor read; {fix}")
    return False


def cache_key(**parts: Any) -> str:
    """A stable digest of the JSON-serialisable ``parts``."""
    return hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True).encode()).hexdigest()


class OutputCache:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.writable = True
        if not usable(self.directory):
            self.read_only()

    def read_only(self, detail: str = "") -> None:
        """Read the entries there are and write none from now on (said once)."""
        if self.writable:
            self.writable = False
            warnings.warn(f"The cache folder {self.directory} is not writable{f' ({detail})' if detail else ''}: its "
                          f"entries are used, and this run's results will not be cached", CacheWarning, stacklevel=3)

    def lock(self, key: str) -> Any:
        """A lock on ``key`` across processes: pytest-xdist's workers (or two runs) wanting the same output wait
        for the one computing it, then read it from the cache, instead of all computing it. A read-only cache
        has no lock to take (a lock file is a write), and nothing of this run to wait for."""
        import contextlib

        from filelock import FileLock

        if not self.writable:
            return contextlib.nullcontext()
        path = self.directory / "locks" / f"{key}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
                raise PermissionError(f"{path} cannot be written")
        except OSError as exc:  # a folder made read-only under the cache (chmod -R a-w on a copy of some of it)
            self.read_only(f"{type(exc).__name__}: {exc}")
            return contextlib.nullcontext()
        return FileLock(str(path))

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> ModelOutputs | None:
        arrays = self.get_arrays(key, _ARRAYS)
        return ModelOutputs(**arrays) if arrays is not None else None

    def put(self, key: str, outputs: ModelOutputs, meta: dict[str, Any]) -> Path | None:
        return self.put_arrays(key, {name: getattr(outputs, name) for name in _ARRAYS}, meta)

    def get_arrays(self, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray | None] | None:
        """The named arrays of entry ``key`` (None for a name it lacks), or None when there is no usable entry."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("key") != key:
                    raise ValueError(f"entry holds key {meta.get('key')!r}")
                return {name: data[name] if name in data.files else None for name in names}
        except FileNotFoundError:  # another run moved this entry aside or replaced it meanwhile: recompute
            return None
        except Exception as exc:
            if not self.writable:  # it stays where it is: recomputed, and not cached
                warnings.warn(f"miniature cache entry {path} is unreadable ({type(exc).__name__}: {exc}); recomputing "
                              f"(the cache is read only: the entry stays)", CacheWarning, stacklevel=2)
                return None
            aside = set_aside(path)
            if aside is None:  # a concurrent run set the same entry aside first
                return None
            warnings.warn(
                f"miniature cache entry {path} is unreadable ({type(exc).__name__}: {exc}); "
                f"moved it to {aside} and recomputing",
                CacheWarning,
                stacklevel=2,
            )
            return None

    def put_arrays(self, key: str, named: dict[str, np.ndarray | None], meta: dict[str, Any]) -> Path | None:
        """Store the arrays under ``key``; None when the cache cannot be written (the result is not cached)."""
        if not self.writable:
            return None
        path = self.path(key)
        arrays = {"meta": np.array(json.dumps({**meta, "key": key}))}
        arrays.update({name: array for name, array in named.items() if array is not None})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        try:
            write_atomic(path, buffer.getvalue())
        except PermissionError as exc:  # part of the folder is read only: the run goes on uncached
            self.read_only(f"{type(exc).__name__}: {exc}")
            return None
        return path
