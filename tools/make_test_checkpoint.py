#!/usr/bin/python3
"""Writes a random-weight OFA checkpoint stored the way real ones are, to test the converter.

  /usr/bin/python3 tools/make_test_checkpoint.py --size tiny --layout fairseq --seed 1 \
      --out /tmp/tiny.pt --io /tmp/tiny-io
  /usr/bin/python3 tools/make_test_checkpoint.py --size test --layout hf --seed 2 --out /tmp/hf-test

fairseq: a torch.save'd dict with "model" (OFA's state dict, including the buffers
token_rp_bucket, image_rp_bucket, image_position_idx, version, BatchNorm num_batches_tracked and
the tied embedding under all three names), the settings in one of three styles (--settings):
`args` (an argparse.Namespace, older fairseq), `cfg-omegaconf` (newer fairseq: an omegaconf
DictConfig, here pickled from look-alike classes registered as omegaconf's modules while saving,
so that loading meets the same class names without omegaconf installed; cfg.model is a Namespace
in an AnyNode, as fairseq stores legacy models) or `cfg-dict` (plain nested dicts, with an
omegaconf interpolation), and the usual extra entries (optimizer history, extra_state with a
numpy scalar and a fairseq enum).
hf: a folder with pytorch_model.bin (the names of OFA's transformers port, feature/add_transformers
modeling_ofa.py) and its config.json.

The weights are the synthetic recipe (tests/fixtures/SYNTHETIC_WEIGHTS.md) with --seed; with
--dtype float16 they are rounded to float16 first, so the reference and the checkpoint agree.
--io DIR writes the reference's inputs and outputs in the parity fixture layout
(tests/fixtures/parity/README.md): config.json, case.json and io.safetensors.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import os
import re
import sys
import types
import typing
from argparse import Namespace
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_fixtures  # noqa: E402
import ofa_reference  # noqa: E402
import safetensors_np  # noqa: E402
from make_model import parse_image_size  # noqa: E402

SIZES = ("test", "tiny", "base", "large")
# fairseq architecture and ResNet type of each size (the test size has no real ResNet type).
FAIRSEQ_ARCH = {"test": ("ofa_tiny", None), "tiny": ("ofa_tiny", "resnet50"),
                "base": ("ofa_base", "resnet101"), "large": ("ofa_large", "resnet152")}
IO_SRC_LENGTHS, IO_TGT_LENGTHS = (12, 5, 1), (6, 3, 1)


# -- the model ----------------------------------------------------------------------------------


def build_model(args) -> ofa_reference.OFAModel:
    config = ofa_reference.make_config(args.size, args.encoder_mode, args.image_size,
                                       name=f"test-checkpoint-{args.size}")
    model = ofa_reference.synthetic_model(config, args.seed)
    if args.dtype == "float16":
        with torch.no_grad():
            for _, tensor in ofa_reference.stored_tensors(model):
                tensor.copy_(tensor.half().float())
    return model


def buffers(config, layout: str) -> Dict[str, torch.Tensor]:
    """OFA's registered buffers with their real shapes (their content does not matter here)."""
    tb, ib = config["token_bucket_size"], config["image_bucket_size"]
    token = ofa_reference.buckets.token_bucket(
        torch.arange(1024)[:, None] - torch.arange(1024)[None, :], tb)
    image = torch.zeros(ib * ib + 1, ib * ib + 1, dtype=torch.long)
    window = 128 // 8  # code_image_size / 8
    grid = torch.arange(window)[None, :] + torch.arange(window)[:, None] * ib + 1
    position_idx = torch.cat([torch.tensor([0]), grid.view(-1), torch.full((768,), 1024)])
    out = {}
    for stack in ("encoder", "decoder"):
        out[f"{stack}.token_rp_bucket"] = token.clone()
        out[f"{stack}.image_rp_bucket"] = image.clone()
        if layout == "fairseq":
            out[f"{stack}.version"] = torch.tensor([3.0])
    out["decoder.image_position_idx"] = position_idx
    return out


def hf_name(name: str) -> str:
    """OFA's name -> the transformers port's: the layer modules the port calls differently."""
    m = re.match(r"^((?:en|de)coder\.layers\.\d+)\.([a-z_]+)(\..*)$", name)
    if not m:
        return name
    port = {"attn_ln": "self_attn_mid_layer_norm", "self_attn_ln": "self_attn_mid_layer_norm",
            "cross_attn_ln": "cross_attn_mid_layer_norm", "ffn_layernorm": "ffn_layer_norm",
            "encoder_attn": "cross_attn", "encoder_attn_layer_norm": "cross_attn_layer_norm"}
    return m.group(1) + "." + port.get(m.group(2), m.group(2)) + m.group(3)


def state_dict(model, layout: str, dtype: str, drop, add) -> Dict[str, torch.Tensor]:
    state = dict(model.state_dict())  # keeps the three tied names and num_batches_tracked
    for name in state:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1234)
    state.update(buffers(model.config, layout))
    if dtype == "float16":
        state = {n: t.half() if t.is_floating_point() else t for n, t in state.items()}
    for name in drop:
        if name not in state:
            raise SystemExit(f"--drop-tensor {name}: no such tensor")
        del state[name]
    for name in add:
        state[name] = torch.linspace(-1, 1, 3)
    if layout == "hf":
        state = {hf_name(n): t for n, t in state.items()}
    # Tied tensors share storage, as in a real checkpoint (torch.save writes it once).
    return state


# -- settings -----------------------------------------------------------------------------------


def fairseq_args(model, args) -> Dict[str, Any]:
    c = model.config
    arch, resnet = FAIRSEQ_ARCH[args.size]
    d, heads, ffn = c["d_model"], c["attention_heads"], c["ffn_dim"]
    return dict(
        arch=arch, task="caption", train_mue=c["encoder_mode"] == "decomposed",
        encoder_embed_dim=d, decoder_embed_dim=d, encoder_layers=c["encoder_layers"],
        decoder_layers=c["decoder_layers"], encoder_attention_heads=heads,
        decoder_attention_heads=heads, encoder_ffn_embed_dim=ffn, decoder_ffn_embed_dim=ffn,
        resnet_type=resnet, max_source_positions=c["max_source_positions"],
        max_target_positions=c["max_target_positions"], token_bucket_size=c["token_bucket_size"],
        image_bucket_size=c["image_bucket_size"], attn_scale_factor=2,
        patch_image_size=c["image_size"][0], orig_patch_image_size=256,
        entangle_position_embedding=False, disable_entangle=True, scale_attn=True, scale_fc=True,
        scale_heads=True, scale_resids=False, no_scale_embedding=True, layernorm_embedding=True,
        patch_layernorm_embedding=True, code_layernorm_embedding=True, add_type_embedding=True,
        share_all_embeddings=True, share_decoder_input_output_embed=True,
        encoder_normalize_before=True, decoder_normalize_before=True, activation_fn="gelu",
        dropout=0.1, attention_dropout=0.0, resnet_drop_path_rate=0.0,
        encoder_drop_path_rate=0.1, decoder_drop_path_rate=0.1,
        imagenet_default_mean_and_std=False, fp16=args.dtype == "float16", lr=[1e-5],
        seed=args.seed, bpe_dir="../../utils/BPE", max_src_length=80, max_tgt_length=20)


def hf_config(model, size: str) -> Dict[str, Any]:
    c = model.config
    assert c["max_source_positions"] == c["max_target_positions"]
    config = dict(
        architectures=["OFAModel"], model_type="ofa", vocab_size=c["vocab_size"],
        d_model=c["d_model"], encoder_layers=c["encoder_layers"],
        decoder_layers=c["decoder_layers"], encoder_attention_heads=c["attention_heads"],
        decoder_attention_heads=c["attention_heads"], encoder_ffn_dim=c["ffn_dim"],
        decoder_ffn_dim=c["ffn_dim"], max_position_embeddings=c["max_source_positions"],
        normformer=True, token_bucket_size=c["token_bucket_size"],
        image_bucket_size=c["image_bucket_size"], attn_scale_factor=2.0,
        entangle_position_embedding=False, scale_embedding=False, layernorm_embedding=True,
        patch_layernorm_embedding=True, add_type_embedding=True, code_layernorm_embedding=True,
        share_decoder_input_output_embed=True, encoder_normalize_before=True,
        decoder_normalize_before=True, activation_function="gelu", pad_token_id=c["pad_id"],
        bos_token_id=c["bos_id"], eos_token_id=c["eos_id"], use_cache=False,
        torch_dtype="float32", transformers_version="4.18.0.dev0")
    resnet = FAIRSEQ_ARCH[size][1]
    if resnet is not None:  # the port hard-codes ResNet widths: the test size has no type
        config["resnet_type"] = resnet
    return config


def apply_overrides(settings: Dict[str, Any], sets, unsets) -> Dict[str, Any]:
    for item in sets:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value)
    for key in unsets:
        settings.pop(key, None)
    return settings


# -- omegaconf look-alikes (for cfg-omegaconf) ---------------------------------------------------


class _ContainerMetadata:
    def __init__(self, key=None):
        self.ref_type = typing.Any
        self.object_type = dict
        self.optional = True
        self.key = key
        self.flags = {}
        self.flags_root = False
        self.resolver_cache = {}
        self.key_type = typing.Any
        self.element_type = typing.Any


class _Metadata:
    def __init__(self, key=None):
        self.ref_type = typing.Any
        self.object_type = None
        self.optional = True
        self.key = key
        self.flags = {}


class _AnyNode:
    def __init__(self, value, key, parent):
        self._metadata = _Metadata(key)
        self._parent = parent
        self._val = value


class _DictConfig:
    """Pickles as omegaconf's DictConfig does: its __dict__ (metadata, parent, content)."""

    def __init__(self, content: Dict[str, Any], key=None, parent=None):
        self._metadata = _ContainerMetadata(key)
        self._parent = parent
        self._content = {k: (_DictConfig(v, k, self) if isinstance(v, dict)
                             else _AnyNode(v, k, self)) for k, v in content.items()}

    def __getstate__(self):
        return dict(self.__dict__)


class _LogFormat(enum.Enum):  # stands for fairseq.dataclass.constants' ChoiceEnum members
    json = "json"


@contextlib.contextmanager
def foreign_classes():
    """Registers the look-alikes under omegaconf's and fairseq's module names while saving."""
    placement = {"omegaconf.dictconfig": {"DictConfig": _DictConfig},
                 "omegaconf.base": {"ContainerMetadata": _ContainerMetadata,
                                    "Metadata": _Metadata},
                 "omegaconf.nodes": {"AnyNode": _AnyNode},
                 "fairseq.dataclass.constants": {"LOG_FORMAT_CHOICES": _LogFormat}}
    added = []
    for parent in ("omegaconf", "fairseq", "fairseq.dataclass"):
        if parent not in sys.modules:  # import of a dotted module needs its packages
            sys.modules[parent] = types.ModuleType(parent)
            added.append(parent)
    for module_name, classes in placement.items():
        module = types.ModuleType(module_name)
        for name, cls in classes.items():
            cls.__module__, cls.__qualname__, cls.__name__ = module_name, name, name
            setattr(module, name, cls)
        sys.modules[module_name] = module
        added.append(module_name)
    try:
        yield
    finally:
        for module_name in added:
            del sys.modules[module_name]


def fairseq_checkpoint(model, args, state) -> Dict[str, Any]:
    settings = apply_overrides(fairseq_args(model, args), args.set, args.unset)
    checkpoint: Dict[str, Any] = {
        "args": None,
        "model": state,
        "optimizer_history": [{"criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion",
                               "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": 1.25}, "num_updates": 1000}],
        "extra_state": {"epoch": 3, "best": np.float64(1.25),
                        "train_iterator": {"epoch": 3, "iterations_in_epoch": 0}},
        "last_optimizer_state": None,
        "task_state": {},
    }
    task_keys = ("patch_image_size", "max_src_length", "max_tgt_length", "bpe_dir",
                 "imagenet_default_mean_and_std")
    if args.settings == "args":
        checkpoint["args"] = Namespace(**settings)
    elif args.settings == "cfg-omegaconf":
        model_ns = Namespace(**settings, _name=settings.get("arch"))
        checkpoint["cfg"] = _DictConfig({
            "_name": None,
            "common": {"fp16": settings.get("fp16"), "log_format": _LogFormat.json,
                       "seed": args.seed},
            "model": model_ns,  # fairseq keeps legacy (argparse) models' settings as a Namespace
            "task": {"_name": "caption", **{k: settings[k] for k in task_keys if k in settings}},
            "optimization": {"lr": [1e-5], "max_epoch": 3},
        })
    else:  # cfg-dict: model settings in cfg.model, task settings in cfg.task, one interpolation
        model_cfg = {k: v for k, v in settings.items() if k not in task_keys}
        model_cfg["_name"] = model_cfg.pop("arch", None)
        task_cfg = {k: settings[k] for k in task_keys if k in settings}
        if "max_source_positions" in model_cfg:
            task_cfg["max_source_positions"] = model_cfg["max_source_positions"]
            model_cfg["max_source_positions"] = "${task.max_source_positions}"
        checkpoint["cfg"] = {"_name": None, "common": {"seed": args.seed},
                             "model": model_cfg, "task": {"_name": "caption", **task_cfg}}
    return checkpoint


# -- reference outputs --------------------------------------------------------------------------


def write_io(model, args, directory: str) -> None:
    """The reference's outputs on seeded inputs, in the parity fixture layout."""
    h, w = args.io_image_size if isinstance(args.io_image_size, list) else [args.io_image_size] * 2
    case = make_fixtures.Case(f"checkpoint_{args.size}", args.size, model.config["encoder_mode"],
                              (h, w), args.seed, IO_SRC_LENGTHS, IO_TGT_LENGTHS)
    images, src, prev = make_fixtures.make_inputs(case, model.config,
                                                  np.random.default_rng(args.seed))
    ids = torch.from_numpy(make_fixtures.logit_ids(model.config["vocab_size"]))
    encoder_out = model.encode(torch.from_numpy(images), torch.from_numpy(src))
    full = model.decoder.logits(model.decoder(torch.from_numpy(prev), encoder_out))
    state = model.start_decoding(encoder_out, prev.shape[1])
    steps = torch.stack([model.decode_step(torch.from_numpy(prev[:, t]), state)
                         for t in range(prev.shape[1])], dim=1)
    os.makedirs(directory, exist_ok=True)
    ofa_reference.write_config(model.config, directory)
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump({"seed": args.seed, "description": case.description, "dtype": args.dtype,
                   "parameters": [[n, list(s)] for n, s in ofa_reference.parameter_specs(model)]},
                  f, indent=1)
        f.write("\n")
    safetensors_np.save_file({
        "patch_images": images, "src_tokens": src, "prev_output_tokens": prev,
        "encoder_out": encoder_out.hidden.numpy(), "decoder_logits_ids": ids.numpy(),
        "decoder_logits": full[..., ids].numpy(),
        "decoder_logsumexp": torch.logsumexp(full, dim=-1).numpy(),
        "incremental_logits": steps[..., ids].numpy(),
        "incremental_logsumexp": torch.logsumexp(steps, dim=-1).numpy(),
    }, os.path.join(directory, "io.safetensors"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", required=True, choices=SIZES)
    parser.add_argument("--layout", required=True, choices=("fairseq", "hf"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="fairseq: the .pt file; hf: a folder")
    parser.add_argument("--settings", default="args", choices=("args", "cfg-omegaconf", "cfg-dict"),
                        help="how a fairseq checkpoint stores its settings")
    parser.add_argument("--encoder-mode", choices=("decomposed", "joint"),
                        help="the mode it was trained in (fairseq: train_mue; default "
                             "decomposed); the HF port has only OFA's joint encoder")
    parser.add_argument("--image-size", type=parse_image_size, default=None,
                        help="patch_image_size (default: 64 for test, else 480)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="set a setting (fairseq args / cfg.model, or config.json)")
    parser.add_argument("--unset", action="append", default=[], metavar="KEY")
    parser.add_argument("--drop-tensor", action="append", default=[], metavar="NAME",
                        help="leave out a tensor (OFA name)")
    parser.add_argument("--add-tensor", action="append", default=[], metavar="NAME",
                        help="add a small tensor under a name OFA does not have")
    parser.add_argument("--io", metavar="DIR", help="also write the reference's inputs/outputs")
    parser.add_argument("--io-image-size", type=parse_image_size, default=64,
                        help="image size of the --io inputs (N or HxW, default 64)")
    args = parser.parse_args(argv)
    if args.layout == "hf" and args.encoder_mode == "decomposed":
        parser.error("the HF port has no MuE (decomposed) encoder")
    args.encoder_mode = args.encoder_mode or ("joint" if args.layout == "hf" else "decomposed")

    torch.set_grad_enabled(False)
    model = build_model(args)
    state = state_dict(model, args.layout, args.dtype, args.drop_tensor, args.add_tensor)
    if args.layout == "hf":
        os.makedirs(args.out, exist_ok=True)
        torch.save(state, os.path.join(args.out, "pytorch_model.bin"))
        config = apply_overrides(hf_config(model, args.size), args.set, args.unset)
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
    else:
        with foreign_classes():
            torch.save(fairseq_checkpoint(model, args, state), args.out)
    if args.io:
        write_io(model, args, args.io)
    count = sum(int(np.prod(s)) for _, s in ofa_reference.parameter_specs(model))
    print(f"{args.layout} {args.size} checkpoint ({count:,} parameters, {args.dtype}, encoder "
          f"{model.config['encoder_mode']}, seed {args.seed}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
