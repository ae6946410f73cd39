"""OFA's multi-head attention (spec 3.5), batch-first.

q = (W_q x + b_q) * (head_dim * attn_scale_factor)^-1/2; scores = q k^T + bias, with key-padding
and causal masks; softmax in float32; each head's output is scaled by the learned c_attn[h]
(NormFormer scale_heads) before out_proj.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, scale_factor: float = 2.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = float(self.head_dim * scale_factor) ** -0.5
        # Registration order follows OFA's, so that state_dict() lists the keys as OFA does.
        self.c_attn = nn.Parameter(torch.ones(num_heads))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        # When a list, attend() appends its log-probabilities [B, H, Tq, Tk] to it (training
        # tools that supervise where attention rests); not a parameter, not in state_dict().
        self.recorded_log_probs: Optional[List[Tensor]] = None

    def split_heads(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, H, T, head_dim]."""
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def project_query(self, x: Tensor) -> Tensor:
        """Scaled queries [B, H, T, head_dim] of x [B, T, D]."""
        return self.split_heads(self.q_proj(x) * self.scaling)

    def project_key_value(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Keys and values [B, H, T, head_dim] of x [B, T, D]."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None,
               key_padding_mask: Optional[Tensor] = None, causal: bool = False) -> Tensor:
        """Attention of projected heads q [B, H, Tq, d] over k, v [B, H, Tk, d] -> [B, Tq, D].

        bias: broadcastable to [B, H, Tq, >= Tk]; when longer than Tk its last Tk columns are
          used (OFA right-aligns the bias to the keys, which matters for MuE's shorter caches).
        key_padding_mask: [B, Tk] bool, True for keys to ignore.
        causal: queries are the last Tq of the Tk positions and see no later key.
        """
        tq, tk = q.shape[-2], k.shape[-2]
        scores = q @ k.transpose(-1, -2)
        if bias is not None:
            scores = scores + bias[..., -tk:]
        if causal:
            future = torch.ones(tq, tk, dtype=torch.bool, device=q.device).triu(tk - tq + 1)
            scores = scores.masked_fill(future, float("-inf"))
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if self.recorded_log_probs is not None:
            self.recorded_log_probs.append(F.log_softmax(scores.float(), dim=-1))
        probs = F.softmax(scores.float(), dim=-1).type_as(scores)
        heads = (probs @ v) * self.c_attn[:, None, None]
        b, h, _, d = heads.shape
        return self.out_proj(heads.transpose(1, 2).reshape(b, tq, h * d))

    def forward(self, query: Tensor, key_value: Optional[Tensor] = None,
                bias: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                causal: bool = False) -> Tensor:
        """Self-attention of query [B, T, D] (or attention over key_value [B, S, D])."""
        k, v = self.project_key_value(query if key_value is None else key_value)
        return self.attend(self.project_query(query), k, v, bias, key_padding_mask, causal)
