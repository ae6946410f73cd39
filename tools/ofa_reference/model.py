"""OFAModel: encoder + decoder sharing one token embedding, built from a config dict."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from .config import Config, normalize_config
from .decoder import Decoder, DecoderHook, DecoderState
from .encoder import AfterLayerHook, Encoder, EncoderOutput


class OFAModel(nn.Module):
    """OFA / MuE with fairseq's parameter names (spec 3.7): `model.state_dict()` has OFA's keys.

    The token embedding is one Parameter, reachable as encoder.embed_tokens,
    decoder.embed_tokens and decoder.output_projection (share_all_embeddings).
    """

    def __init__(self, config: Config):
        super().__init__()
        self.config = normalize_config(config)
        c = self.config
        embed_tokens = nn.Embedding(c["vocab_size"], c["d_model"], padding_idx=c["pad_id"])
        self.encoder = Encoder(c, embed_tokens)
        self.decoder = Decoder(c, embed_tokens)

    def encode(self, patch_images: Tensor, src_tokens: Tensor,
               after_layer: Optional[AfterLayerHook] = None) -> EncoderOutput:
        return self.encoder(patch_images, src_tokens, after_layer)

    def forward(self, patch_images: Tensor, src_tokens: Tensor,
                prev_output_tokens: Tensor) -> Tensor:
        """Full-sequence logits [B, T, V]."""
        encoder_out = self.encode(patch_images, src_tokens)
        return self.decoder.logits(self.decoder(prev_output_tokens, encoder_out))

    def start_decoding(self, encoder_out: EncoderOutput, capacity: int) -> DecoderState:
        return self.decoder.start(encoder_out, capacity)

    def decode_step(self, tokens: Tensor, state: DecoderState,
                    after_layer: Optional[DecoderHook] = None,
                    skipped_layer_cache: str = "reference") -> Tensor:
        """Logits [B, V] of the next position, feeding tokens [B] at position state.step."""
        return self.decoder.logits(
            self.decoder.step(tokens, state, after_layer, skipped_layer_cache))[:, 0]
