"""llama-cpp-python, the binding that runs GGUF models: loaded once, its log kept out of the terminal (its last lines
go into error messages), and the threads a process may give it."""

from __future__ import annotations

import collections
from typing import Any

from ..errors import ModelLoadError

#: The last lines llama.cpp logged (its errors say why a file did not load).
logged: collections.deque[str] = collections.deque(maxlen=12)
_log_callback: Any = None
_initialised = False


def _capture_log() -> None:
    """Keep llama.cpp's log out of the terminal and its last lines for error messages."""
    global _log_callback
    import ctypes

    import llama_cpp

    if _log_callback is None:
        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            line = text.decode("utf-8", "replace").strip()
            if line:
                logged.append(line)

        _log_callback = callback
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def llama_cpp_module() -> Any:
    """The llama-cpp-python binding, with llama.cpp's backend initialised once."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ModelLoadError(
            f"Running a GGUF model needs llama.cpp's Python binding: pip install 'pytest-miniature[gguf]' (it builds "
            f"llama-cpp-python and its vendored llama.cpp from source) ({type(exc).__name__}: {exc})") from exc
    global _initialised
    if not _initialised:
        _capture_log()
        llama_cpp.llama_backend_init()
        _initialised = True
    return llama_cpp


def threads_default() -> int:
    """llama.cpp's threads: as many as torch uses in this process, which is its share of the cores (a pytest-xdist
    worker's; a Ray actor's, where Ray sets OMP_NUM_THREADS to the actor's CPUs). llama.cpp's threads wait for each
    other spinning, so more threads than cores is far slower than fewer."""
    import torch

    return max(1, torch.get_num_threads())


def binding_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return "not installed"


def gpu_offload() -> bool:
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False
