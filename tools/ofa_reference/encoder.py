"""The OFA encoder in both modes: `joint` (stock OFA) and `decomposed` (MuE, spec 1.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import buckets
from .config import Config
from .layers import EncoderLayer
from .resnet import ResNet

# after_layer(stream, layer_index, layer_input, layer_output) -> True to stop that stream there,
# keeping layer_output (MuE's exit test plugs in here). stream is "image", "text" or "joint".
# The hook may instead return a bool tensor [B]: the samples marked True stop there (per-sample
# exits, spec 1.2.4); the others go on.
AfterLayerHook = Callable[[str, int, Tensor, Tensor], Union[bool, Tensor]]


def stop_mask(decision: Union[bool, Tensor], batch: int) -> Tensor:
    """A hook's answer as a bool tensor [batch]."""
    if isinstance(decision, Tensor):
        if decision.shape != (batch,) or decision.dtype != torch.bool:
            raise ValueError(f"an after_layer hook returned a {decision.dtype} tensor of shape "
                             f"{list(decision.shape)}; expected bool [{batch}]")
        return decision
    return torch.full((batch,), bool(decision), dtype=torch.bool)


@dataclass
class Stream:
    """One sequence that goes through the encoder layers, with what its layers need."""

    name: str
    embedding: Tensor  # [B, T, D]: the layer-0 input
    bias: Callable[[int], Tensor]  # layer index -> attention bias [1, H, T, T]
    padding_mask: Optional[Tensor]  # [B, T], True at pad tokens
    # Input of layer 0, then the state after each layer; a sample that has exited keeps its exit
    # state in the later entries.
    states: List[Tensor] = field(default_factory=list)
    layers_used: Optional[Tensor] = None  # [B] int64: the layers each sample went through


@dataclass
class EncoderOutput:
    hidden: Tensor  # [B, P + L, D]: [image; text], after encoder.layer_norm
    padding_mask: Tensor  # [B, P + L] bool, True at text pad positions (image tokens never)
    position_embedding: Tensor  # [P + L, D]: [image_pos_ln(P_img); pos_ln(P_txt)], same per sample
    num_image_tokens: int
    layers_used: Dict[str, Tensor]  # per stream ("image"/"text" or "joint"): [B] int64 per sample
    streams: Dict[str, Stream]  # each stream's per-layer states (layer inputs and outputs)


class Encoder(nn.Module):
    def __init__(self, config: Config, embed_tokens: nn.Embedding):
        super().__init__()
        d, heads, eps = config["d_model"], config["attention_heads"], config["layer_norm_eps"]
        self.mode = config["encoder_mode"]
        self.num_heads = heads
        self.token_bucket_size = config["token_bucket_size"]
        self.image_bucket_size = config["image_bucket_size"]
        self.max_source_positions = config["max_source_positions"]
        self.pad_id = config["pad_id"]
        self.pos_scaling = float(d / heads * config["attn_scale_factor"]) ** -0.5
        # Registration order follows OFA's TransformerEncoder (state_dict key order).
        self.embed_tokens = embed_tokens
        self.layernorm_embedding = nn.LayerNorm(d, eps=eps)
        self.type_embedding = nn.Embedding(2, d)
        self.embed_images = ResNet(config["resnet_layers"], config["resnet_width"])
        self.image_proj = nn.Linear(self.embed_images.out_channels, d)
        self.patch_layernorm_embedding = nn.LayerNorm(d, eps=eps)
        self.embed_positions = nn.Embedding(config["max_source_positions"] + 2, d)
        self.embed_image_positions = nn.Embedding(config["image_bucket_size"] ** 2 + 1, d)
        self.pos_ln = nn.LayerNorm(d, eps=eps)
        self.image_pos_ln = nn.LayerNorm(d, eps=eps)
        self.pos_q_linear = nn.Linear(d, d)
        self.pos_k_linear = nn.Linear(d, d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, heads, config["ffn_dim"], config["attn_scale_factor"], eps)
            for _ in range(config["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(d, eps=eps)
        self.token_rel_pos_table_list = nn.ModuleList(
            nn.Embedding(2 * self.token_bucket_size - 1, heads)
            for _ in range(config["encoder_layers"]))
        self.image_rel_pos_table_list = nn.ModuleList(
            nn.Embedding((2 * self.image_bucket_size - 1) ** 2 + 3, heads)
            for _ in range(config["encoder_layers"]))

    # -- embeddings (spec 3.4) -------------------------------------------------------------

    def embed_text(self, src_tokens: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(x [B, L, D] with pad rows zeroed, pad mask [B, L], pos_ln(P_txt) [L, D])."""
        length = src_tokens.shape[1]
        if length > self.max_source_positions:
            raise ValueError(f"source length {length} exceeds max_source_positions "
                             f"{self.max_source_positions}")
        padding_mask = src_tokens.eq(self.pad_id)
        x = self.layernorm_embedding(self.embed_tokens(src_tokens) + self.type_embedding.weight[0])
        x = x * (~padding_mask).unsqueeze(-1).type_as(x)
        positions = torch.arange(length, device=src_tokens.device)
        return x, padding_mask, self.pos_ln(self.embed_positions(positions))

    def embed_image(self, patch_images: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """(x [B, P, D], image_pos_ln(P_img) [P, D], grid (h, w)); patches row-major."""
        features = self.embed_images(patch_images)  # [B, C, h, w]
        h, w = features.shape[-2:]
        if h > self.image_bucket_size or w > self.image_bucket_size:
            raise ValueError(f"image grid {h}x{w} does not fit image_bucket_size "
                             f"{self.image_bucket_size}")
        x = self.image_proj(features.flatten(2).transpose(1, 2)) + self.type_embedding.weight[1]
        x = self.patch_layernorm_embedding(x)
        ids = buckets.image_position_ids(h, w, self.image_bucket_size).to(patch_images.device)
        return x, self.image_pos_ln(self.embed_image_positions(ids)), (h, w)

    # -- attention biases ------------------------------------------------------------------

    def abs_pos_bias(self, pos: Tensor) -> Tensor:
        """[1, H, T, T]: (pos_q_linear(pos) * s) (pos_k_linear(pos))^T per head, pos [T, D]."""
        t, d = pos.shape
        q = (self.pos_q_linear(pos) * self.pos_scaling).view(t, self.num_heads, -1).transpose(0, 1)
        k = self.pos_k_linear(pos).view(t, self.num_heads, -1).transpose(0, 1)
        return (q @ k.transpose(1, 2)).unsqueeze(0)

    def token_rel_bias(self, layer: int, length: int) -> Tensor:
        """[1, H, L, L] from layer `layer`'s token table."""
        idx = buckets.token_bucket_matrix(length, length, self.token_bucket_size)
        table = self.token_rel_pos_table_list[layer].weight
        return table[idx.to(table.device)].permute(2, 0, 1).unsqueeze(0)

    def image_rel_bias(self, layer: int, grid: Tuple[int, int]) -> Tensor:
        """[1, H, P, P] from layer `layer`'s 2-D image table."""
        idx = buckets.image_bucket_matrix(grid[0], grid[1], self.image_bucket_size)
        table = self.image_rel_pos_table_list[layer].weight
        return table[idx.to(table.device)].permute(2, 0, 1).unsqueeze(0)

    # -- layers ----------------------------------------------------------------------------

    def run_stream(self, stream: Stream, after_layer: Optional[AfterLayerHook] = None) -> Tensor:
        """Runs `stream` through the layers, recording each state; returns the layers each sample
        used ([B] int64).

        A sample that exits keeps its state from then on. It still rides along in the batch (its
        later outputs are discarded: samples do not interact in the encoder), and the loop ends
        once every sample has exited."""
        x = stream.embedding
        batch = x.shape[0]
        stream.states = [x]
        done = torch.zeros(batch, dtype=torch.bool, device=x.device)
        used = torch.full((batch,), len(self.layers), dtype=torch.long, device=x.device)
        for idx, layer in enumerate(self.layers):
            y = layer(x, stream.bias(idx), stream.padding_mask)
            y = torch.where(done[:, None, None], x, y)
            if after_layer is not None:
                stop = stop_mask(after_layer(stream.name, idx, x, y), batch).to(x.device) & ~done
                used[stop] = idx + 1
                done |= stop
            stream.states.append(y)
            x = y
            if bool(done.all()):
                break
        stream.layers_used = used
        return used

    def make_streams(self, image_x: Tensor, image_pos: Tensor, grid: Tuple[int, int],
                     text_x: Tensor, text_pad: Tensor, text_pos: Tensor) -> List[Stream]:
        num_image = image_x.shape[1]
        if self.mode == "decomposed":
            # spec 1.2: separate streams through the same layers. The text stream has the abs
            # bias plus each layer's token bias; the image stream only the abs bias (MuE drops the
            # 2-D relative bias there).
            text_abs = self.abs_pos_bias(text_pos)
            image_abs = self.abs_pos_bias(image_pos)
            length = text_x.shape[1]
            return [
                Stream("image", image_x, lambda idx: image_abs, None),
                Stream("text", text_x, lambda idx: text_abs + self.token_rel_bias(idx, length),
                       text_pad),
            ]
        # Stock OFA: one [image; text] sequence; the abs bias spans both, the image block gets the
        # layer's 2-D relative bias and the text block its token bias.
        joint_abs = self.abs_pos_bias(torch.cat([image_pos, text_pos]))
        length = text_x.shape[1]

        def joint_bias(idx: int) -> Tensor:
            bias = joint_abs.clone()
            bias[:, :, :num_image, :num_image] += self.image_rel_bias(idx, grid)
            bias[:, :, num_image:, num_image:] += self.token_rel_bias(idx, length)
            return bias

        padding = torch.cat([text_pad.new_zeros(text_pad.shape[0], num_image), text_pad], dim=1)
        return [Stream("joint", torch.cat([image_x, text_x], dim=1), joint_bias, padding)]

    def forward(self, patch_images: Tensor, src_tokens: Tensor,
                after_layer: Optional[AfterLayerHook] = None) -> EncoderOutput:
        """patch_images [B, 3, H, W] (normalised), src_tokens [B, L] right-padded with pad_id."""
        if patch_images.shape[0] != src_tokens.shape[0]:
            raise ValueError(f"batch of {patch_images.shape[0]} images but {src_tokens.shape[0]} "
                             f"token rows")
        image_x, image_pos, grid = self.embed_image(patch_images)
        text_x, text_pad, text_pos = self.embed_text(src_tokens)
        streams = self.make_streams(image_x, image_pos, grid, text_x, text_pad, text_pos)
        layers_used = {s.name: self.run_stream(s, after_layer) for s in streams}
        hidden = torch.cat([s.states[-1] for s in streams], dim=1)
        padding = torch.cat([image_x.new_zeros(image_x.shape[:2], dtype=torch.bool), text_pad], 1)
        return EncoderOutput(
            hidden=self.layer_norm(hidden),
            padding_mask=padding,
            position_embedding=torch.cat([image_pos, text_pos]),
            num_image_tokens=image_x.shape[1],
            layers_used=layers_used,
            streams={s.name: s for s in streams},
        )
