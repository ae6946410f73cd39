"""The OFA decoder (spec 3.6): full-sequence (causal) and incremental (one token per step)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import buckets
from .config import Config
from .encoder import EncoderOutput, stop_mask
from .layers import DecoderLayer, KVCache

# after_layer(layer_index, layer_input, layer_output) -> True to stop after that layer, keeping
# layer_output (MuE's decoder exit test plugs in here; spec 1.3), or a bool tensor [B] to stop
# only the rows marked True.
DecoderHook = Callable[[int, Tensor, Tensor], Union[bool, Tensor]]

# What a layer skipped by an exit puts in its self-attention cache (incremental decoding, spec 1.3):
# "reference" = nothing (the released code), "propagate" = K/V projected from the exited state.
SKIPPED_LAYER_CACHE_MODES = ("reference", "propagate")


@dataclass
class DecoderState:
    """What incremental decoding keeps between steps for one encoded batch."""

    encoder_kv: List[Tuple[Tensor, Tensor]]  # per layer: cross-attention K, V [B, H, S, d]
    encoder_padding_mask: Tensor  # [B, S]
    cross_pos_k: Tensor  # [H, S, d]: cross_pos_k_linear(encoder positions) per head
    self_pos_q: Tensor  # [H, capacity, d]: self_pos_q_linear(Pt) * s per head
    self_pos_k: Tensor  # [H, capacity, d]
    cross_pos_q: Tensor  # [H, capacity, d]: cross_pos_q_linear(Pt) * s per head
    caches: List[KVCache]  # per layer self-attention K/V
    step: int = 0  # position of the next token
    layers_used: List[Tensor] = field(default_factory=list)  # per step: [B] int64 per row

    def reorder(self, rows: Tensor) -> None:
        """Row i becomes old row rows[i] (beam search: rows may repeat or disappear)."""
        self.encoder_kv = [(k[rows], v[rows]) for k, v in self.encoder_kv]
        self.encoder_padding_mask = self.encoder_padding_mask[rows]
        for cache in self.caches:
            cache.reorder(rows)


class Decoder(nn.Module):
    def __init__(self, config: Config, embed_tokens: nn.Embedding):
        super().__init__()
        d, heads, eps = config["d_model"], config["attention_heads"], config["layer_norm_eps"]
        self.num_heads = heads
        self.head_dim = d // heads
        self.token_bucket_size = config["token_bucket_size"]
        self.max_target_positions = config["max_target_positions"]
        self.pad_id = config["pad_id"]
        self.pos_scaling = float(d / heads * config["attn_scale_factor"]) ** -0.5
        # Registration order follows OFA's TransformerDecoder (state_dict key order). The image
        # tables, image_pos_ln and code_layernorm_embedding serve image generation only; they are
        # kept so that the keys match OFA's.
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(d, eps=eps)
        self.embed_positions = nn.Embedding(config["max_target_positions"] + 2, d)
        self.embed_image_positions = nn.Embedding(config["image_bucket_size"] ** 2 + 1, d)
        self.pos_ln = nn.LayerNorm(d, eps=eps)
        self.image_pos_ln = nn.LayerNorm(d, eps=eps)
        self.self_pos_q_linear = nn.Linear(d, d)
        self.self_pos_k_linear = nn.Linear(d, d)
        self.cross_pos_q_linear = nn.Linear(d, d)
        self.cross_pos_k_linear = nn.Linear(d, d)
        self.code_layernorm_embedding = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(
            DecoderLayer(d, heads, config["ffn_dim"], config["attn_scale_factor"], eps)
            for _ in range(config["decoder_layers"]))
        self.layer_norm = nn.LayerNorm(d, eps=eps)
        self.output_projection = nn.Linear(d, config["vocab_size"], bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied (share_all_embeddings)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * self.token_bucket_size - 1, heads)
            for _ in range(config["decoder_layers"]))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding((2 * config["image_bucket_size"] - 1) ** 2 + 3, heads)
            for _ in range(config["decoder_layers"]))

    # -- positions -------------------------------------------------------------------------

    def heads(self, x: Tensor) -> Tensor:
        """[T, D] -> [H, T, d]."""
        return x.view(x.shape[0], self.num_heads, self.head_dim).transpose(0, 1)

    def target_positions(self, length: int, device) -> Tensor:
        """Pt = pos_ln(embed_positions(0..length-1)) [length, D]."""
        if length > self.max_target_positions:
            raise ValueError(f"target length {length} exceeds max_target_positions "
                             f"{self.max_target_positions}")
        return self.pos_ln(self.embed_positions(torch.arange(length, device=device)))

    def token_rel_bias(self, layer: int, query_len: int, key_len: int, offset: int = 0) -> Tensor:
        """[1, H, Tq, Tk] from layer `layer`'s token table; queries at offset + 0..Tq-1."""
        idx = buckets.token_bucket_matrix(query_len, key_len, self.token_bucket_size, offset)
        table = self.token_rel_pos_table_list[layer].weight
        return table[idx.to(table.device)].permute(2, 0, 1).unsqueeze(0)

    # -- shared pieces ---------------------------------------------------------------------

    def embed(self, tokens: Tensor) -> Tensor:
        """layernorm_embedding(E[tokens]); scale 1 and no position add (disable_entangle)."""
        return self.layernorm_embedding(self.embed_tokens(tokens))

    def run_layers(self, x: Tensor, layer_inputs: Callable[[int, Tensor], dict],
                   after_layer: Optional[DecoderHook],
                   run_skipped: bool = False) -> Tuple[Tensor, Tensor]:
        """Runs the layers on x [B, T, D]; layer_inputs(idx, exited) gives layer idx's keyword
        arguments, exited [B] bool marking the rows that have already stopped. Returns (features
        after decoder.layer_norm, layers used per row [B] int64).

        An exited row keeps its exit state: it rides along (its later outputs are discarded) so
        that the deeper layers still see it; with run_skipped they run even once every row has
        exited (the `propagate` cache mode needs their K/V of the exited state)."""
        batch = x.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=x.device)
        used = torch.full((batch,), len(self.layers), dtype=torch.long, device=x.device)
        for idx, layer in enumerate(self.layers):
            if bool(done.all()) and not run_skipped:
                break
            y = layer(x, **layer_inputs(idx, done.clone()))
            y = torch.where(done[:, None, None], x, y)
            if after_layer is not None:
                stop = stop_mask(after_layer(idx, x, y), batch).to(x.device) & ~done
                used[stop] = idx + 1
                done |= stop
            x = y
        return self.layer_norm(x), used

    def logits(self, features: Tensor) -> Tensor:
        """features @ E^T: [..., D] -> [..., V]."""
        return self.output_projection(features)

    # -- full sequence ---------------------------------------------------------------------

    def forward(self, prev_output_tokens: Tensor, encoder_out: EncoderOutput,
                after_layer: Optional[DecoderHook] = None,
                layers_used: Optional[List[Tensor]] = None) -> Tensor:
        """Features [B, T, D] (after decoder.layer_norm) of the whole right-padded target
        [B, T] under the causal mask. `layers_used`, if given, receives the layers each sample
        used ([B] int64)."""
        t = prev_output_tokens.shape[1]
        pt = self.target_positions(t, prev_output_tokens.device)
        self_abs = (self.heads(self.self_pos_q_linear(pt) * self.pos_scaling)
                    @ self.heads(self.self_pos_k_linear(pt)).transpose(1, 2)).unsqueeze(0)
        cross_bias = (self.heads(self.cross_pos_q_linear(pt) * self.pos_scaling)
                      @ self.heads(self.cross_pos_k_linear(encoder_out.position_embedding))
                      .transpose(1, 2)).unsqueeze(0)
        padding = prev_output_tokens.eq(self.pad_id)

        def layer_inputs(idx: int, exited: Tensor) -> dict:
            return dict(encoder_kv=self.layers[idx].encoder_key_value(encoder_out.hidden),
                        self_bias=self_abs + self.token_rel_bias(idx, t, t),
                        cross_bias=cross_bias, self_padding_mask=padding,
                        encoder_padding_mask=encoder_out.padding_mask)

        features, used = self.run_layers(self.embed(prev_output_tokens), layer_inputs, after_layer)
        if layers_used is not None:
            layers_used.append(used)
        return features

    # -- incremental -----------------------------------------------------------------------

    def start(self, encoder_out: EncoderOutput, capacity: int) -> DecoderState:
        """State for decoding up to `capacity` tokens: cross-attention K/V of every layer and the
        position projections are computed once here."""
        hidden = encoder_out.hidden
        pt = self.target_positions(capacity, hidden.device)
        batch = hidden.shape[0]
        return DecoderState(
            encoder_kv=[layer.encoder_key_value(hidden) for layer in self.layers],
            encoder_padding_mask=encoder_out.padding_mask,
            cross_pos_k=self.heads(self.cross_pos_k_linear(encoder_out.position_embedding)),
            self_pos_q=self.heads(self.self_pos_q_linear(pt) * self.pos_scaling),
            self_pos_k=self.heads(self.self_pos_k_linear(pt)),
            cross_pos_q=self.heads(self.cross_pos_q_linear(pt) * self.pos_scaling),
            caches=[KVCache.empty(batch, self.num_heads, capacity, self.head_dim, hidden)
                    for _ in self.layers],
        )

    def step(self, tokens: Tensor, state: DecoderState, after_layer: Optional[DecoderHook] = None,
             skipped_layer_cache: str = "reference") -> Tensor:
        """Feeds the token at position state.step for each row (tokens [B]); returns its features
        [B, 1, D]. Bias rows cover positions 0..t and are right-aligned to each row's cache.

        A row that exits after layer l leaves the deeper layers' caches without an entry for this
        step ("reference", the released MuE code) or gives each deeper layer j the K/V
        k_proj_j/v_proj_j(self_attn_layer_norm_j(exited state)) ("propagate", CALM-style; it is
        what layer j computes from the exited state that rides along)."""
        if skipped_layer_cache not in SKIPPED_LAYER_CACHE_MODES:
            raise ValueError(f"skipped_layer_cache must be one of {SKIPPED_LAYER_CACHE_MODES}, "
                             f"got {skipped_layer_cache!r}")
        propagate = skipped_layer_cache == "propagate"
        t = state.step
        if t >= state.self_pos_q.shape[1]:
            raise ValueError(f"decoder state was started for {state.self_pos_q.shape[1]} tokens")
        tokens = tokens.view(-1, 1)
        # Row t of the full-sequence biases: [1, H, 1, t + 1] and [1, H, 1, S].
        self_abs = (state.self_pos_q[:, t:t + 1] @ state.self_pos_k[:, :t + 1].transpose(1, 2))[None]
        cross_bias = (state.cross_pos_q[:, t:t + 1] @ state.cross_pos_k.transpose(1, 2))[None]
        padding = tokens.eq(self.pad_id)

        def layer_inputs(idx: int, exited: Tensor) -> dict:
            return dict(encoder_kv=state.encoder_kv[idx],
                        self_bias=self_abs + self.token_rel_bias(idx, 1, t + 1, offset=t),
                        cross_bias=cross_bias, self_padding_mask=padding,
                        encoder_padding_mask=state.encoder_padding_mask,
                        cache=state.caches[idx], cache_rows=None if propagate else ~exited)

        features, used = self.run_layers(self.embed(tokens), layer_inputs, after_layer,
                                         run_skipped=propagate)
        state.step += 1
        state.layers_used.append(used)
        return features
