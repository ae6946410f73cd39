"""Deterministic random weights by name, the recipe of tests/fixtures/SYNTHETIC_WEIGHTS.md.

Each element is a SplitMix64-style hash of (tensor name, seed, element index), so the C++ tests
can rebuild exactly the same weights from a fixture's seed and parameter list. All integer
arithmetic is on numpy uint64 arrays (which wrap modulo 2^64); the only float steps are the
final ones, in float32, exactly as the recipe states.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_CHUNK = 1 << 20  # elements per vectorised block: bounds temporaries to a few MiB

_EMBEDDING_MODULES = ("embed_tokens", "embed_positions", "embed_image_positions", "type_embedding")
_REL_TABLE_LISTS = ("token_rel_pos_table_list", "image_rel_pos_table_list")


def fnv1a64(text: str) -> int:
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return h


def tensor_key(name: str, seed: int) -> int:
    return fnv1a64(name) ^ ((seed * _GOLDEN) & _MASK64)


def _is_norm_module(module: str) -> bool:
    parts = module.split(".")
    last = parts[-1]
    if last in ("bn1", "bn2", "bn3"):
        return True
    if last == "1" and len(parts) >= 2 and parts[-2] == "downsample":
        return True
    return "layer_norm" in last or "layernorm" in last or last.endswith("_ln") or last == "attn_ln"


def center_and_spread(name: str, shape: Sequence[int]) -> Tuple[float, float]:
    """The (center, spread) of tensor `name` by the first matching rule of the recipe."""
    parts = name.split(".")
    if name.endswith("running_var"):
        return 1.0, 0.2
    if name.endswith("running_mean"):
        return 0.0, 0.1
    if parts[-1] == "c_attn":
        return 1.0, 0.2
    if len(shape) == 1 and parts[-1] in ("weight", "bias") and _is_norm_module(".".join(parts[:-1])):
        return (1.0, 0.2) if parts[-1] == "weight" else (0.0, 0.1)
    if parts[-1] == "weight" and len(parts) >= 2 and parts[-2] in _EMBEDDING_MODULES:
        return 0.0, 0.5
    if parts[-1] == "weight" and any(p in _REL_TABLE_LISTS for p in parts):
        return 0.0, 0.5
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:], dtype=np.int64))
        return 0.0, math.sqrt(3.0 / fan_in)
    return 0.0, 0.1


def uniform_bits(key: int, begin: int, end: int) -> np.ndarray:
    """The 24-bit integers (z_i >> 40) for elements begin..end-1, as uint64."""
    z = np.arange(begin + 1, end + 1, dtype=np.uint64)
    z *= np.uint64(_GOLDEN)
    z += np.uint64(key)
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MIX2)
    z ^= z >> np.uint64(31)
    z >>= np.uint64(40)
    return z


def synthetic_tensor(name: str, shape: Sequence[int], seed: int) -> np.ndarray:
    """The float32 tensor `name` of `shape` for `seed`, row-major."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64))
    center, spread = center_and_spread(name, shape)
    center32, spread32 = np.float32(center), np.float32(spread)
    key = tensor_key(name, seed)
    out = np.empty(n, dtype=np.float32)
    for begin in range(0, n, _CHUNK):
        end = min(n, begin + _CHUNK)
        # 24-bit integers and 2u - 1 are exact in float32; then one multiply and one add.
        u = uniform_bits(key, begin, end).astype(np.float32)
        u *= np.float32(2.0 ** -24)
        u *= np.float32(2.0)
        u -= np.float32(1.0)
        u *= spread32
        u += center32
        out[begin:end] = u
    return out.reshape(shape)
