"""Engines answer "these outputs of this model on this data set", with the cache and the fingerprints.

:class:`~miniature.engine.local.Engine` runs every model in this process. It is the one seam
where devices and a distributed engine plug in: checks and the session ask it for outputs,
embeddings and neighbours and never load a model themselves.
"""

from typing import Any

from .local import Engine, RunStats, backend_fingerprint


def make_engine(settings: Any, **kwargs: Any) -> Engine:
    """The engine ``settings.engine`` names: this process (``local``) or a Ray cluster (``ray``)."""
    if getattr(settings, "engine", "local") == "ray":
        from .ray import RayEngine

        return RayEngine(settings, **kwargs)
    return Engine(settings, **kwargs)


__all__ = ["Engine", "RunStats", "backend_fingerprint", "make_engine"]
