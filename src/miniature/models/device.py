"""Where a model runs: the torch device, the dtype of its weights, and (ONNX) the execution providers.

Outputs depend on all three (float16 against float32; CUDA kernels against CPU ones), so what ran
is recorded per model in the report and enters the output cache's key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError

#: What ``device =`` accepts, besides ``cuda:N``.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: The dtypes a transformers model may be loaded in (ONNX graphs keep their own).
DTYPES = ("float32", "float16", "bfloat16")
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def check_device(text: object, owner: str) -> str:
    """``text`` if it names a device this project knows (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    if not isinstance(text, str) or not (text in DEVICES or _CUDA_INDEX.match(text)):
        raise UsageError(f"Expected device to be auto, cpu, cuda, cuda:N or mps in {owner} but got {text!r}")
    return text


def check_dtype(text: object, owner: str) -> str:
    if text not in DTYPES:
        raise UsageError(f"Expected dtype to be one of {', '.join(DTYPES)} in {owner} but got {text!r}")
    return str(text)


def _what_torch_sees() -> str:
    import torch

    build = f"torch {torch.__version__}" + (f", built for CUDA {torch.version.cuda}" if torch.version.cuda
                                            else ", a CPU-only build")
    count = torch.cuda.device_count() if torch.version.cuda else 0
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    return f"{build}; CUDA devices: {count}; MPS: {'yes' if has_mps else 'no'}"


def cpu_only_torch() -> bool:
    """Whether the installed torch is a build for the CPU alone, read from its ``version.py`` without importing
    it (importing torch takes seconds: a gate whose outputs are all cached must not pay them)."""
    import importlib.util
    import platform
    import re
    import sys
    from pathlib import Path

    if "torch" in sys.modules or platform.system() == "Darwin":  # imported already, or a Mac (MPS): ask it
        return False
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return False
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return False
    builds = dict(re.findall(r"^(cuda|hip|xpu)(?:: [^=]+)? = (.+)$", text, flags=re.MULTILINE))
    return bool(builds) and all(value.strip() == "None" for value in builds.values())


def resolve_device(text: str, owner: str = "device") -> str:
    """The torch device ``text`` names on this machine: ``auto`` is CUDA when torch sees one, else MPS,
    else the CPU. Asking for a device that is not there is a usage error naming what torch found."""
    check_device(text, owner)
    if text in ("auto", "cpu") and cpu_only_torch():
        return "cpu"  # a CPU-only build sees no accelerator: no need to import it to ask
    import torch

    if text == "auto":
        if torch.cuda.is_available():
            return "cuda:0"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"{owner} asks for mps, but this machine has no usable MPS device ({_what_torch_sees()})")
        return "mps"
    index = int(_CUDA_INDEX.match(text).group(1)) if text != "cuda" else 0
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise UsageError(f"{owner} asks for {text}, but torch sees no such CUDA device here ({_what_torch_sees()}); "
                         f"use device = \"auto\" or \"cpu\", or install a CUDA build of torch")
    return f"cuda:{index}"


def onnx_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """The onnxruntime execution providers for ``device``: CUDA first when onnxruntime-gpu is installed and the
    device is CUDA, the CPU otherwise (and always as the fallback for operators CUDA lacks)."""
    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.partition(":")[2] or "0"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def dtype_argument(dtype: str) -> dict:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56 (``torch_dtype`` is deprecated
    there), ``torch_dtype`` before; nothing for float32, the default, so older releases see no new keyword."""
    import torch
    import transformers

    if dtype == "float32":
        return {}
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": getattr(torch, dtype)}


def xdist_workers() -> int:
    """How many pytest-xdist workers share this machine's cores (1 outside xdist)."""
    import os

    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)


def intra_op_threads() -> int:
    """onnxruntime's threads: as many as torch uses (0, onnxruntime's default, when torch has its default),
    so a pytest-xdist worker keeps to its share of the cores."""
    if xdist_workers() > 1:
        import torch

        return torch.get_num_threads()
    return 0


@dataclass(frozen=True)
class Placement:
    """Where a model ran: enough to tell outputs apart (cache key) and to report it."""

    device: str
    dtype: str
    #: onnxruntime's provider that ran the graph (None for transformers models).
    provider: str | None = None

    def key(self, accelerator: str | None = None) -> dict[str, str | None]:
        """The parts of the cache key: the kind of device and, for a GPU, its model (kernels differ between
        GPU generations), not its index (two identical cards compute alike). ``accelerator``: the GPU's
        name when it is not this process's (a Ray actor's)."""
        kind = self.device.partition(":")[0]
        if kind == "cuda" and accelerator is None:
            import torch

            accelerator = torch.cuda.get_device_name(int(self.device.partition(":")[2] or 0))
        return {"device": kind, "accelerator": accelerator, "dtype": self.dtype, "provider": self.provider}

    def as_dict(self) -> dict[str, str | None]:
        return {"device": self.device, "dtype": self.dtype, "provider": self.provider}
