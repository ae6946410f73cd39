"""Relative-position buckets and image position ids, as OFA defines them (spec 3.4)."""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

# OFA builds its token bucket matrix with the module default max_position (1024) whatever the
# configured max_source/target_positions; the log-bucket scale depends on it, so it is a constant.
TOKEN_BUCKET_MAX_POSITION = 1024


def token_bucket(relative: Tensor, bucket_size: int,
                 max_position: int = TOKEN_BUCKET_MAX_POSITION) -> Tensor:
    """Table row of each relative position i - j (int64 tensor of any shape).

    Offsets within +-bucket_size/2 keep their own bucket; farther ones share logarithmic buckets.
    The logarithm runs in float32, as in OFA's make_token_bucket_position.
    """
    mid = bucket_size // 2
    sign = torch.sign(relative)
    abs_pos = torch.where((relative < mid) & (relative > -mid),
                          torch.full_like(relative, mid - 1), relative.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid)
                         * (mid - 1)) + mid
    bucket = torch.where(abs_pos <= mid, relative, log_pos.long() * sign)
    return bucket + bucket_size - 1


@functools.lru_cache(maxsize=64)
def token_bucket_matrix(query_len: int, key_len: int, bucket_size: int, key_offset: int = 0) -> Tensor:
    """[query_len, key_len] buckets of (query position i) - (key position j); query positions are
    key_offset + 0..query_len-1 (a decoder step t has query_len 1 and key_offset t)."""
    q = torch.arange(query_len, dtype=torch.long)[:, None] + key_offset
    k = torch.arange(key_len, dtype=torch.long)[None, :]
    return token_bucket(q - k, bucket_size)


def image_grid_coords(height: int, width: int) -> Tensor:
    """[h*w, 2] (row, column) of each patch in row-major order."""
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    return torch.stack([rows, cols], dim=1)


def image_position_ids(height: int, width: int, bucket_size: int) -> Tensor:
    """[h*w] rows of embed_image_positions: r * bucket_size + c + 1 (row 0 is never used)."""
    rc = image_grid_coords(height, width)
    return rc[:, 0] * bucket_size + rc[:, 1] + 1


@functools.lru_cache(maxsize=16)
def image_bucket_matrix(height: int, width: int, bucket_size: int) -> Tensor:
    """[P, P] rows of image_rel_pos_table for patch pairs (a, b):
    (dr + B - 1) * (2B - 1) + (dc + B - 1) with dr, dc = position of a minus position of b.
    (OFA's bucket matrix also has reserved rows (2B-1)^2 .. +2 for position id 0, which patches
    never have.)"""
    rc = image_grid_coords(height, width)
    delta = rc[:, None, :] - rc[None, :, :] + (bucket_size - 1)
    return delta[..., 0] * (2 * bucket_size - 1) + delta[..., 1]
