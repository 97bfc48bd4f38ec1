"""Model specs and backends. Heavy libraries are imported only when a model is opened."""

from __future__ import annotations

from pathlib import Path

from .base import Backend, forward_counter
from .spec import BUILTIN_ALIASES, ModelSpec, parse_model_spec

__all__ = ["BUILTIN_ALIASES", "Backend", "ModelSpec", "forward_counter", "open_backend", "parse_model_spec"]


def open_backend(spec: ModelSpec) -> Backend:
    """The backend for ``spec``, with hub ids resolved to a local snapshot; nothing is loaded yet."""
    if spec.backend == "onnx":
        from .onnx import OnnxBackend

        return OnnxBackend(spec)
    if spec.backend == "gguf":
        from .gguf import GGUFBackend

        return GGUFBackend(spec)
    from .hf import HFBackend, download

    local = Path(spec.location) if spec.is_local else download(spec.text, spec.location, spec.options.get("revision"))
    return HFBackend(spec, local)
