"""Joining a Ray cluster, and what its actors raise: the Ray engine's plumbing.

``ray.init()`` joins the cluster ``RAY_ADDRESS`` names within ``ray_connect_timeout`` seconds (an unreachable one
is an :class:`~miniature.errors.EngineError` naming it), else starts a local Ray on this machine (also when
``RAY_ADDRESS`` is empty, as CI systems export unset variables). An error raised on an actor becomes the cause
itself, one line, with Ray's traceback (colour codes removed) in a file the message names.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from ..errors import EngineError, MissingExtraError, UsageError


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("engine = \"ray\" needs Ray: pip install 'pytest-miniature[ray]'") from None
    return ray


_INIT = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
_FIX = "start it, correct RAY_ADDRESS, or leave RAY_ADDRESS unset (or empty) to start a local Ray"


def connect(ray: Any, timeout: float) -> None:
    """Join the cluster ``RAY_ADDRESS`` names within ``timeout`` seconds, else start a local Ray here.

    Ray retries an unreachable address for minutes (Ray 2.x: ``NUM_REDIS_GET_RETRIES`` = 20 attempts in
    ``ray/_private/node.py``, each up to ~40 s of gRPC connect and GCS waits), so the address is first probed
    with a plain TCP connection (a refused or unrouted port fails at once), then ``ray.init`` runs in a daemon
    thread the driver waits on for what is left of ``timeout``: a port that accepts but never answers as Ray's
    GCS is an error then, and the abandoned thread ends with the process.
    """
    address = os.environ.get("RAY_ADDRESS")
    if address is None or not address.strip() or address.strip() == "local":
        try:  # unset: Ray's own choice (a `ray start` cluster of this machine, else a new one); empty: a new one
            ray.init(address=None if address is None else "local", **_INIT)
        except Exception as exc:
            raise EngineError(f"Could not start a local Ray: {type(exc).__name__}: {_first_line(exc)}") from None
        return
    import socket
    import threading
    import time

    address, deadline = address.strip(), time.monotonic() + timeout
    where = f"The Ray cluster at RAY_ADDRESS={address}"
    host, port = _endpoint(address, where)
    try:
        socket.create_connection((host, port), timeout=min(timeout, 10.0)).close()
    except OSError as exc:
        raise EngineError(f"{where} cannot be reached ({host}:{port}: {exc.strerror or exc}); {_FIX}") from None
    failed: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, **_INIT)
        except BaseException as exc:  # handed to the driver's thread
            failed.append(exc)

    quiet = _Quiet()  # ray.init off the main thread logs that it set no SIGTERM handler: true, and no news
    logging.getLogger("ray._private.worker").addFilter(quiet)
    try:
        thread = threading.Thread(target=init, name="miniature: ray.init", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
    finally:
        logging.getLogger("ray._private.worker").removeFilter(quiet)
    if thread.is_alive():
        raise EngineError(f"{where} did not answer within {timeout:g} s (ray_connect_timeout in [tool.miniature], "
                          f"--ray-connect-timeout); {_FIX}")
    if failed:
        raise EngineError(f"{where} could not be joined: {type(failed[0]).__name__}: {_first_line(failed[0])}; "
                          f"{_FIX}") from None


def _endpoint(address: str, where: str) -> tuple[str, int]:
    """(host, port) ``ray.init`` connects to for ``address``: a Ray Client's ``ray://host[:port]``, else the GCS
    address as Ray itself resolves it (``auto``: a cluster of this machine; a local name: this node's address)."""
    from urllib.parse import urlsplit

    if "://" in address:
        try:
            parsed = urlsplit(address)
            return parsed.hostname or "", parsed.port or 10001
        except ValueError as exc:
            raise UsageError(f"Expected RAY_ADDRESS to be host:port, ray://host:port, auto or local but got "
                             f"{address!r} ({exc})") from None
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # a Ray that moved it: the address as written
        def canonicalize_bootstrap_address(address: str) -> str:
            if not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", address):
                raise ValueError(address)
            return address

    try:
        resolved = canonicalize_bootstrap_address(address)
    except ValueError:
        raise UsageError(f"Expected RAY_ADDRESS to be host:port, ray://host:port, auto or local but got "
                         f"{address!r}") from None
    except ConnectionError as exc:
        raise EngineError(f"{where} names no cluster ({_first_line(exc)}); {_FIX}") from None
    host, _, port = resolved.rpartition(":")
    return host.strip("[]"), int(port)


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(error: BaseException) -> str:
    return next((line for line in _ANSI.sub("", str(error)).splitlines() if line.strip()), "")


def last_line(text: str) -> str:
    return next((line.strip() for line in reversed(_ANSI.sub("", text).splitlines()) if line.strip()), "")


def save_actor_traceback(text: str) -> str:
    """The actor's traceback, without colour codes, in a file of its own; its path."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", prefix="miniature-ray-traceback-", suffix=".txt", delete=False) as handle:
        handle.write(_ANSI.sub("", text) + "\n")
    return handle.name


def raised_on_actor(error: Any) -> BaseException:
    """What an actor raised (a ``RayTaskError``), as the local engine raises it: the cause itself, its message
    one line naming the file that holds the actor's traceback (Ray's own is 50 lines of colour codes)."""
    from ray.exceptions import RayError

    from ..errors import ModelLoadError

    note = f" (the actor's traceback is in {save_actor_traceback(str(error))})"
    cause = getattr(error, "cause", None)  # a RayError when the cause could not be sent back: its last line says it
    if isinstance(cause, Exception) and not isinstance(cause, RayError) and cause.args and isinstance(cause.args[0], str):
        cause.args = (cause.args[0] + note, *cause.args[1:])
        return cause
    return ModelLoadError(last_line(str(error)) + note)
