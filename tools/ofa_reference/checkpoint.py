"""The model directory of models/FORMAT.md: config.json + model.safetensors.

The tied embedding is stored once as encoder.embed_tokens.weight; BatchNorm num_batches_tracked
is not stored. Loading accepts F16/BF16 (widened to float32) and the optional tensors FORMAT.md
allows to be absent.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Tuple

import numpy as np
import torch

import safetensors_np
import synthetic_weights
from .config import Config, normalize_config
from .model import OFAModel

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SHARED_EMBEDDING = "encoder.embed_tokens.weight"
EMBEDDING_ALIASES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
# Decoder tensors used only by image generation (FORMAT.md: optional).
OPTIONAL_PREFIXES = ("decoder.image_rel_pos_table_list.", "decoder.embed_image_positions.",
                     "decoder.image_pos_ln.", "decoder.code_layernorm_embedding.")


def is_stored(name: str) -> bool:
    return name not in EMBEDDING_ALIASES and not name.endswith("num_batches_tracked")


def stored_tensors(model: OFAModel) -> List[Tuple[str, torch.Tensor]]:
    """(name, tensor) of everything model.safetensors holds, in state_dict order."""
    return [(n, t) for n, t in model.state_dict().items() if is_stored(n)]


def parameter_specs(model: OFAModel) -> List[Tuple[str, Tuple[int, ...]]]:
    return [(n, tuple(t.shape)) for n, t in stored_tensors(model)]


def write_config(config: Config, directory: str) -> None:
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def read_config(directory: str) -> Config:
    path = os.path.join(directory, CONFIG_FILE)
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read config: {e}")
    return normalize_config(raw, source=path)


def save_model(model: OFAModel, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    write_config(model.config, directory)
    tensors = {n: t.detach().cpu().float().numpy() for n, t in stored_tensors(model)}
    safetensors_np.save_file(tensors, os.path.join(directory, WEIGHTS_FILE))


def load_weights(model: OFAModel, path: str) -> None:
    """Fills `model` from a safetensors file, checking names and shapes; every problem is
    reported at once."""
    expected = dict(stored_tensors(model))
    found = dict(safetensors_np.iter_tensors(path, widen=True))
    for alias in EMBEDDING_ALIASES:  # identical aliases are allowed
        if alias in found:
            if SHARED_EMBEDDING in found and not np.array_equal(found[alias], found[SHARED_EMBEDDING]):
                raise ValueError(f"{path}: {alias} differs from {SHARED_EMBEDDING}")
            found.setdefault(SHARED_EMBEDDING, found[alias])
            del found[alias]
    problems = []
    for name, tensor in expected.items():
        if name not in found:
            if not name.startswith(OPTIONAL_PREFIXES):
                problems.append(f"missing {name}")
        elif tuple(found[name].shape) != tuple(tensor.shape):
            problems.append(f"{name} has shape {list(found[name].shape)}, "
                            f"expected {list(tensor.shape)}")
    unexpected = sorted(set(found) - set(expected))
    problems += [f"unexpected {n}" for n in unexpected]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    with torch.no_grad():
        for name, tensor in expected.items():
            if name in found:
                tensor.copy_(torch.from_numpy(np.array(found[name], dtype=np.float32)))


def load_model(directory: str) -> OFAModel:
    """The model of a model directory, in eval mode."""
    model = OFAModel(read_config(directory))
    load_weights(model, os.path.join(directory, WEIGHTS_FILE))
    return model.eval()


def synthetic_arrays(specs, seed: int) -> Iterator[np.ndarray]:
    for name, shape in specs:
        yield synthetic_weights.synthetic_tensor(name, shape, seed)


def synthetic_model(config: Config, seed: int) -> OFAModel:
    """A model whose every stored tensor comes from the synthetic-weights recipe with `seed`."""
    model = OFAModel(config)
    with torch.no_grad():
        for name, tensor in stored_tensors(model):
            tensor.copy_(torch.from_numpy(synthetic_weights.synthetic_tensor(name, tensor.shape, seed)))
    return model.eval()


def write_synthetic_model_dir(config: Config, seed: int, directory: str) -> int:
    """Writes config.json and synthetic model.safetensors tensor by tensor (little memory);
    returns the parameter count."""
    config = normalize_config(config)
    specs = parameter_specs(OFAModel(config))
    os.makedirs(directory, exist_ok=True)
    write_config(config, directory)
    safetensors_np.save_stream([(n, "F32", s) for n, s in specs], synthetic_arrays(specs, seed),
                               os.path.join(directory, WEIGHTS_FILE),
                               metadata={"format": "pt", "synthetic_seed": str(seed)})
    return sum(int(np.prod(s)) for _, s in specs)
