"""Engines answer "these outputs of this model on this data set", with the cache and the fingerprints.

:class:`~miniature.engine.local.Engine` runs every model in this process. It is the one seam
where devices and a distributed engine plug in: checks and the session ask it for outputs,
embeddings and neighbours and never load a model themselves.
"""

from .local import Engine, RunStats, backend_fingerprint

__all__ = ["Engine", "RunStats", "backend_fingerprint"]
