"""Pre-norm transformer layers with OFA's NormFormer extras (spec 3.4, 3.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import MultiheadAttention


def feed_forward(layer: nn.Module, x: Tensor) -> Tensor:
    """fc2(ffn_layernorm(gelu(fc1(final_layer_norm(x))))) with exact erf GELU; both layer kinds
    own these parameters under the same OFA names."""
    return layer.fc2(layer.ffn_layernorm(F.gelu(layer.fc1(layer.final_layer_norm(x)))))


class EncoderLayer(nn.Module):
    """h = x + attn_ln(MHA(self_attn_layer_norm(x))); y = h + FFN(h)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, attn_scale_factor: float,
                 eps: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, attn_scale_factor)
        self.self_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.attn_ln = nn.LayerNorm(d_model, eps=eps)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim, eps=eps)
        self.final_layer_norm = nn.LayerNorm(d_model, eps=eps)

    def forward(self, x: Tensor, bias: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """x [B, T, D]; bias broadcastable to [B, H, T, T]; key_padding_mask [B, T]."""
        h = x + self.attn_ln(self.self_attn(self.self_attn_layer_norm(x), bias=bias,
                                            key_padding_mask=key_padding_mask))
        return h + feed_forward(self, h)


@dataclass
class KVCache:
    """One decoder layer's self-attention keys/values, preallocated to `capacity` positions.

    `lengths[b]` counts row b's filled positions. Under MuE a layer skipped at some step gets no
    entry in `reference` mode, so caches of different layers, and of different rows of one layer,
    can have different lengths (spec 1.3).
    """

    keys: Tensor  # [B, H, capacity, head_dim]
    values: Tensor  # [B, H, capacity, head_dim]
    padding: Tensor  # [B, capacity] bool, True for pad tokens
    lengths: Tensor  # [B] int64

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, like: Tensor) -> "KVCache":
        shape = (batch, heads, capacity, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape),
                   torch.zeros(batch, capacity, dtype=torch.bool, device=like.device),
                   torch.zeros(batch, dtype=torch.long, device=like.device))

    @property
    def length(self) -> int:
        """The common length of all rows (an error when rows differ)."""
        if self.lengths.numel() and not bool((self.lengths == self.lengths[0]).all()):
            raise ValueError(f"cache rows have different lengths {self.lengths.tolist()}")
        return int(self.lengths[0]) if self.lengths.numel() else 0

    def append(self, k: Tensor, v: Tensor, padding: Tensor,
               rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Stores n new positions (k, v [B, H, n, d], padding [B, n]) after each row's own
        length, for the rows marked in `rows` ([B] bool; None = all). Returns views of
        everything cached so far, `end` = the longest row, with a key mask [B, end] that hides
        pad tokens and the unfilled tail of shorter rows."""
        n = k.shape[2]
        index = (torch.arange(k.shape[0], device=k.device) if rows is None
                 else rows.nonzero().flatten())
        if n and index.numel():
            if int(self.lengths[index].max()) + n > self.keys.shape[2]:
                raise ValueError(f"decoder cache holds {self.keys.shape[2]} positions; a row "
                                 f"would grow to {int(self.lengths[index].max()) + n}")
            for i in range(n):
                at = self.lengths[index] + i
                self.keys[index, :, at] = k[index, :, i]
                self.values[index, :, at] = v[index, :, i]
                self.padding[index, at] = padding[index, i]
            self.lengths[index] += n
        end = int(self.lengths.max())
        unfilled = torch.arange(end, device=k.device)[None, :] >= self.lengths[:, None]
        return (self.keys[:, :, :end], self.values[:, :, :end],
                self.padding[:, :end] | unfilled)

    def align_bias(self, bias: Tensor) -> Tensor:
        """Right-aligns bias [.., H, Tq, t] to each row's keys: key j of row b (length n_b) gets
        column t - n_b + j, as OFA's `[:, :, -src_len:]` does (spec 1.3). Returns [B, H, Tq, end];
        columns past a row's length are masked by `append`'s key mask anyway."""
        batch, end, t = self.lengths.shape[0], int(self.lengths.max()), bias.shape[-1]
        columns = (t - self.lengths)[:, None] + torch.arange(end, device=bias.device)[None, :]
        columns = columns.clamp(0, t - 1)
        full = bias.expand(batch, *bias.shape[-3:])
        index = columns[:, None, None, :].expand(batch, full.shape[1], full.shape[2], end)
        return full.gather(-1, index)

    def reorder(self, rows: Tensor) -> None:
        """Row i becomes old row rows[i] (beam search; rows may repeat or disappear)."""
        self.keys, self.values = self.keys[rows], self.values[rows]
        self.padding, self.lengths = self.padding[rows], self.lengths[rows]


class DecoderLayer(nn.Module):
    """h1 = y + self_attn_ln(SelfMHA(self_attn_layer_norm(y)));
    h2 = h1 + cross_attn_ln(CrossMHA(encoder_attn_layer_norm(h1), encoder));
    out = h2 + FFN(h2)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, attn_scale_factor: float,
                 eps: float):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, num_heads, attn_scale_factor)
        self.self_attn_ln = nn.LayerNorm(d_model, eps=eps)
        self.cross_attn_ln = nn.LayerNorm(d_model, eps=eps)
        self.self_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.encoder_attn = MultiheadAttention(d_model, num_heads, attn_scale_factor)
        self.encoder_attn_layer_norm = nn.LayerNorm(d_model, eps=eps)
        self.ffn_layernorm = nn.LayerNorm(ffn_dim, eps=eps)
        self.fc1 = nn.Linear(d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.final_layer_norm = nn.LayerNorm(d_model, eps=eps)

    def encoder_key_value(self, encoder_out: Tensor) -> Tuple[Tensor, Tensor]:
        """Cross-attention keys/values of the encoder output, computed once per encode."""
        return self.encoder_attn.project_key_value(encoder_out)

    def forward(self, y: Tensor, encoder_kv: Tuple[Tensor, Tensor], self_bias: Tensor,
                cross_bias: Tensor, self_padding_mask: Tensor,
                encoder_padding_mask: Optional[Tensor], cache: Optional[KVCache] = None,
                cache_rows: Optional[Tensor] = None) -> Tensor:
        """y [B, T, D]: the whole target (cache None) or the newest T positions (appended to
        `cache`, for the rows marked in cache_rows [B] bool, default all). self_bias
        [.., H, T, >= keys] (right-aligned to each row's cache), cross_bias [.., H, T, S];
        self_padding_mask [B, T] marks pad tokens among the new positions."""
        x = self.self_attn_layer_norm(y)
        q = self.self_attn.project_query(x)
        k, v = self.self_attn.project_key_value(x)
        if cache is not None:
            k, v, self_padding_mask = cache.append(k, v, self_padding_mask, cache_rows)
            self_bias = cache.align_bias(self_bias)
        h = y + self.self_attn_ln(self.self_attn.attend(q, k, v, self_bias, self_padding_mask,
                                                        causal=True))
        q = self.encoder_attn.project_query(self.encoder_attn_layer_norm(h))
        h = h + self.cross_attn_ln(self.encoder_attn.attend(q, *encoder_kv, cross_bias,
                                                           encoder_padding_mask))
        return h + feed_forward(self, h)
