"""Atomic file writes: readers see the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, and rename it over ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would (0666 less the umask),
    not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def set_aside(path: str | os.PathLike[str]) -> Path | None:
    """Move an unreadable file to ``<name>.corrupt`` for inspection; None when a concurrent run already
    moved or replaced it (runs sharing a cache must never fail because of each other)."""
    path = Path(path)
    aside = path.with_suffix(".corrupt")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return None
    return aside
