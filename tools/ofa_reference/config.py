"""Model configs: the config.json of models/FORMAT.md as a plain dict, with the OFA sizes."""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

Config = Dict[str, Any]

FORMAT_NAME = "mue-ofa"
FORMAT_VERSION = 1

# spec 3.1: common settings of every OFA size.
_COMMON: Config = {
    "format": FORMAT_NAME,
    "format_version": FORMAT_VERSION,
    "resnet_width": 64,
    "vocab_size": 59457,
    "max_source_positions": 1024,
    "max_target_positions": 1024,
    "token_bucket_size": 256,
    "image_bucket_size": 42,
    "attn_scale_factor": 2.0,
    "layer_norm_eps": 1e-5,
    "encoder_mode": "decomposed",
    "image_size": [480, 480],
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "bos_id": 0,
    "pad_id": 1,
    "eos_id": 2,
    "unk_id": 3,
}

# spec 3.1 size table, plus `test`: a model small enough for unit tests that still has every
# part (a 16-wide token bucket so that text of 10+ tokens reaches the logarithmic buckets).
SIZES: Dict[str, Config] = {
    "tiny": dict(d_model=256, encoder_layers=4, decoder_layers=4, attention_heads=4,
                 ffn_dim=1024, resnet_layers=[3, 4, 6]),
    "medium": dict(d_model=512, encoder_layers=4, decoder_layers=4, attention_heads=8,
                   ffn_dim=2048, resnet_layers=[3, 4, 23]),
    "base": dict(d_model=768, encoder_layers=6, decoder_layers=6, attention_heads=12,
                 ffn_dim=3072, resnet_layers=[3, 4, 23]),
    "large": dict(d_model=1024, encoder_layers=12, decoder_layers=12, attention_heads=16,
                  ffn_dim=4096, resnet_layers=[3, 8, 36]),
    "huge": dict(d_model=1280, encoder_layers=24, decoder_layers=12, attention_heads=16,
                 ffn_dim=5120, resnet_layers=[3, 8, 36]),
    "test": dict(d_model=32, encoder_layers=2, decoder_layers=2, attention_heads=4, ffn_dim=64,
                 resnet_layers=[1, 1, 1], resnet_width=8, vocab_size=300,
                 max_source_positions=64, max_target_positions=64, token_bucket_size=16,
                 image_bucket_size=8, image_size=[64, 64]),
}

_INT_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "attention_heads", "ffn_dim",
               "resnet_width", "vocab_size", "max_source_positions", "max_target_positions",
               "token_bucket_size", "image_bucket_size", "bos_id", "pad_id", "eos_id", "unk_id")


def make_config(size: str, encoder_mode: str = "decomposed", image_size=None,
                name: str | None = None) -> Config:
    """The config of OFA size `size` (or `test`) with random weights in mind."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {sorted(SIZES)}")
    config = copy.deepcopy(_COMMON)
    config["name"] = name or f"ofa-{size}-random"
    config.update(copy.deepcopy(SIZES[size]))
    config["encoder_mode"] = encoder_mode
    if image_size is not None:
        config["image_size"] = image_size
    return normalize_config(config)


def image_hw(config: Config) -> Tuple[int, int]:
    """(height, width) of the model's input images."""
    size = config["image_size"]
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def normalize_config(config: Config, source: str = "config") -> Config:
    """A validated copy with `image_size` as [height, width]; errors name `source` and the field."""
    c = copy.deepcopy(config)
    for key, value in _COMMON.items():
        c.setdefault(key, copy.deepcopy(value))
    for key in _INT_FIELDS:
        if key not in c:
            raise ValueError(f"{source}: missing field {key!r}")
        if not isinstance(c[key], int) or isinstance(c[key], bool):
            raise ValueError(f"{source}: {key} must be an integer, got {c[key]!r}")
    for key in _INT_FIELDS[:-4]:
        if c[key] <= 0:
            raise ValueError(f"{source}: {key} must be positive, got {c[key]}")
    if c["format"] != FORMAT_NAME or c["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{source}: not a {FORMAT_NAME} v{FORMAT_VERSION} config")
    if c["d_model"] % c["attention_heads"]:
        raise ValueError(f"{source}: d_model {c['d_model']} is not divisible by "
                         f"attention_heads {c['attention_heads']}")
    if c["encoder_mode"] not in ("joint", "decomposed"):
        raise ValueError(f"{source}: encoder_mode must be 'joint' or 'decomposed', "
                         f"got {c['encoder_mode']!r}")
    layers = c.get("resnet_layers")
    if (not isinstance(layers, list) or len(layers) != 3
            or not all(isinstance(n, int) and n > 0 for n in layers)):
        raise ValueError(f"{source}: resnet_layers must be three positive integers, got {layers!r}")
    size = c["image_size"]
    if isinstance(size, int):
        size = [size, size]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(n, int) and n > 0 for n in size)):
        raise ValueError(f"{source}: image_size must be an integer or [height, width], got {size!r}")
    c["image_size"] = list(size)
    for key in ("bos_id", "pad_id", "eos_id", "unk_id"):
        if not 0 <= c[key] < c["vocab_size"]:
            raise ValueError(f"{source}: {key} {c[key]} is outside the vocabulary")
    return c
