"""A GGUF file's header (its key/value metadata and tensor table) read without loading a weight.

The ``gguf`` package's ``GGUFReader`` makes a numpy view per element of every array, which took 4 s for
SmolLM2-135M's 49,152 tokens and 48,900 merges, in every process that opened the file; this reads the same
layout (GGUF v2 and v3, little-endian) with ``struct`` over a memory map, arrays of numbers as one numpy view,
in a few hundredths of a second. The ``gguf`` package still supplies the type tables.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: GGUF value types: struct format of each scalar (8 = string, 9 = array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorInfo:
    name: str
    kind: int  # ggml type
    elements: int
    start: int  # absolute byte offset of its data
    size: int  # bytes


class _Cursor:
    def __init__(self, data: Any) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("<Q")
        if self.at + length > len(self.data):
            raise ValueError(f"a string of {length} bytes at byte {self.at} runs past the end of the file")
        text = bytes(self.data[self.at:self.at + length]).decode("utf-8", "replace")
        self.at += length
        return text

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            inner, count = self.take("<I"), self.take("<Q")
            if inner in _NUMPY:
                width = np.dtype(_NUMPY[inner]).itemsize * count
                if self.at + width > len(self.data):
                    raise ValueError(f"an array of {count} values at byte {self.at} runs past the end of the file")
                values = np.frombuffer(self.data, dtype=_NUMPY[inner], count=count, offset=self.at).tolist()
                self.at += width
                return values
            return [self.value(inner) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {kind} at byte {self.at}")


def read_header(path: Path) -> tuple[dict[str, Any], list[TensorInfo]]:
    """(metadata, tensors) of GGUF file ``path``; ValueError (or struct.error) for a file that is not GGUF or is cut
    short, the tensors' data included."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        if bytes(data[:4]) != b"GGUF":
            raise ValueError(f"it starts with {bytes(data[:4])!r}, not the GGUF magic b'GGUF'")
        cursor.at = 4
        version = cursor.take("<I")
        if version not in (2, 3):
            raise ValueError(f"it is GGUF version {version}; versions 2 and 3 are read")
        tensors, entries = cursor.take("<Q"), cursor.take("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(entries):
            key = cursor.string()
            metadata[key] = cursor.value(cursor.take("<I"))
        table = []
        for _ in range(tensors):
            name = cursor.string()
            dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
            kind, offset = cursor.take("<I"), cursor.take("<Q")
            table.append((name, dims, kind, offset))
        alignment = int(metadata.get("general.alignment", 32))
        base = -(-cursor.at // alignment) * alignment
        infos = []
        for name, dims, kind, offset in table:
            elements = int(np.prod(dims, dtype=np.int64)) if dims else 1
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            infos.append(TensorInfo(name, kind, elements, base + offset, elements // block * type_size))
        end = max((t.start + t.size for t in infos), default=base)
        if end > len(data):
            raise ValueError(f"its tensors end at byte {end} but the file has {len(data)} bytes")
    return metadata, infos
