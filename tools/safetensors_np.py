"""Minimal safetensors reader and writer on numpy, with no third-party package.

Layout (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
(offsets relative to the end of the header), then the raw little-endian data. The header is
padded with spaces to a multiple of 8 bytes so that the data is aligned.

Supported dtypes: F32, F16 and I64 for reading and writing; BF16 is read (widened to F32).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterable, Iterator, Mapping, Optional, Tuple

import numpy as np

_NP_BY_DTYPE = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is malformed or holds something this module does not support."""


def dtype_name(array: np.ndarray) -> str:
    """The safetensors dtype string for `array`, or an error for unsupported dtypes."""
    for name, dt in _NP_BY_DTYPE.items():
        if array.dtype.kind == dt.kind and array.dtype.itemsize == dt.itemsize:
            return name
    raise SafetensorsError(f"unsupported dtype {array.dtype} (use float32, float16 or int64)")


def _header_bytes(entries: Iterable[Tuple[str, str, Tuple[int, ...], int]],
                  metadata: Optional[Mapping[str, str]]) -> Tuple[bytes, int]:
    """JSON header (space-padded to 8 bytes) for (name, dtype, shape, nbytes) entries."""
    header: Dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        if name in header:
            raise SafetensorsError(f"duplicate tensor name {name!r}")
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return raw, offset


def save_file(tensors: Mapping[str, np.ndarray], path: str,
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes `tensors` (in the mapping's order) to `path`."""
    arrays = [(name, np.ascontiguousarray(a)) for name, a in tensors.items()]
    entries = [(name, dtype_name(a), a.shape, a.nbytes) for name, a in arrays]
    header, _ = _header_bytes(entries, metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for _, a in arrays:
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def save_stream(specs: Iterable[Tuple[str, str, Tuple[int, ...]]],
                arrays: Iterator[np.ndarray], path: str,
                metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes tensors one at a time without holding them all: `specs` gives
    (name, dtype, shape) up front (for the header), `arrays` yields the data in the same order."""
    specs = list(specs)
    entries = []
    for name, dtype, shape in specs:
        if dtype not in _NP_BY_DTYPE:
            raise SafetensorsError(f"{name}: unsupported dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _NP_BY_DTYPE[dtype].itemsize
        entries.append((name, dtype, tuple(shape), nbytes))
    header, _ = _header_bytes(entries, metadata)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for (name, dtype, shape, nbytes), a in zip(entries, arrays):
            a = np.ascontiguousarray(a, dtype=_NP_BY_DTYPE[dtype])
            if a.shape != shape:
                raise SafetensorsError(f"{name}: got shape {a.shape}, header says {shape}")
            f.write(a.tobytes())
        if f.tell() != 8 + len(header) + sum(e[3] for e in entries):
            raise SafetensorsError(f"{path}: fewer arrays than header entries")


def read_header(path: str) -> Tuple[Dict[str, dict], int, Dict[str, str]]:
    """(tensor entries, byte offset of the data section, metadata) of a safetensors file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise SafetensorsError(f"{path}: too short for a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER_BYTES or 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: header is not valid JSON: {e}")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    for name, e in header.items():
        try:
            dtype, shape, (begin, end) = e["dtype"], e["shape"], e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: entry {name!r} lacks dtype/shape/data_offsets")
        if dtype not in _NP_BY_DTYPE and dtype != "BF16":
            raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        itemsize = 2 if dtype == "BF16" else _NP_BY_DTYPE[dtype].itemsize
        count = int(np.prod(shape, dtype=np.int64))
        if not (0 <= begin <= end <= data_size) or end - begin != count * itemsize:
            raise SafetensorsError(
                f"{path}: tensor {name!r} data_offsets {[begin, end]} do not fit shape {shape} "
                f"{dtype} within {data_size} data bytes")
    return header, 8 + n, metadata


def iter_tensors(path: str, widen: bool = False) -> Iterator[Tuple[str, np.ndarray]]:
    """Yields (name, array) in file order from a read-only memory map. With `widen`, F16 and BF16
    tensors come back as float32 copies."""
    header, data_start, _ = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = e["data_offsets"]
        raw = mm[data_start + begin:data_start + end]
        if e["dtype"] == "BF16":
            a = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = raw.view(_NP_BY_DTYPE[e["dtype"]])
            if widen and e["dtype"] == "F16":
                a = a.astype(np.float32)
        yield name, a.reshape(e["shape"])


def load_file(path: str, widen: bool = False) -> Dict[str, np.ndarray]:
    """All tensors of `path` as a dict in file order (memory-mapped unless widened)."""
    return dict(iter_tensors(path, widen=widen))
