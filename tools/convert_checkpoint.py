#!/usr/bin/python3
"""Converts an OFA checkpoint (fairseq .pt, or the Hugging Face port's pytorch_model.bin) into a
mue model directory (models/FORMAT.md).

  /usr/bin/python3 tools/convert_checkpoint.py caption_base_best.pt --out models/ofa-base-caption \
      --bpe-dir ../OFA/utils/BPE
  /usr/bin/python3 tools/convert_checkpoint.py path/to/OFA-tiny --out models/ofa-tiny

The checkpoint is unpickled without importing fairseq or omegaconf and without running anything
it names: classes outside a short allow-list of torch and standard-library types become inert
stand-ins that keep their pickled state as plain data. Sizes come from the checkpoint's args
(fairseq `args`, or `cfg` in newer fairseq; `config.json` for the HF port) and are cross-checked
against the tensor shapes. Features mue does not implement are refused, naming the setting.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import codecs
import collections
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import tarfile
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ofa_reference  # noqa: E402
import safetensors_np  # noqa: E402
from make_model import parse_image_size  # noqa: E402

Shape = Tuple[int, ...]


class ConversionError(Exception):
    """The checkpoint cannot be converted; the message names the thing and the reason."""


# -- restricted unpickling -----------------------------------------------------------------------


class StandIn:
    """An instance of a pickled class the converter does not import (omegaconf containers and
    nodes, fairseq enums and meters, ...). It records what the pickle gave it and does nothing
    else: constructor arguments, __setstate__ state, items and appended elements."""

    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return obj

    def __init__(self, *args, **kwargs):  # arguments were recorded by __new__
        pass

    def __setstate__(self, state):
        self.__dict__["state"] = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.elements.append(value)

    def extend(self, values):
        self.elements.extend(values)

    def __repr__(self):
        return f"<{self.pickled_name}>"


_STAND_INS: Dict[Tuple[str, str], type] = {}


def stand_in_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (StandIn,), {"pickled_name": f"{module}.{name}"})
    return _STAND_INS[key]


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocol 0/1 objects), limited to stand-ins."""
    if isinstance(cls, type) and issubclass(cls, StandIn):
        return cls(state) if state is not None else cls()
    raise pickle.UnpicklingError(f"refusing to rebuild {cls!r} on base {base!r}")


def _getattr(owner, name):
    """getattr, as Python 3.11 pickles enum members (getattr(EnumClass, "member")), limited to
    stand-in classes: the member becomes a stand-in holding its name."""
    if isinstance(owner, type) and issubclass(owner, StandIn) and isinstance(name, str):
        return owner(name)
    raise pickle.UnpicklingError(f"refusing getattr({owner!r}, {name!r})")


class _StorageType:
    """What a pickled storage class (torch.FloatStorage, ...) stands for: its element type."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {"DoubleStorage": torch.float64, "FloatStorage": torch.float32,
                   "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
                   "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8,
                   "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
                   "UntypedStorage": torch.uint8}


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """The only callables and classes a checkpoint may name: tensor rebuilding, dtypes, plain
    containers. Everything else is replaced by a stand-in (never imported, never called)."""
    allowed: Dict[Tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("argparse", "Namespace"): argparse.Namespace,
        ("torch", "Size"): torch.Size,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("builtins", "getattr"): _getattr,
        ("_codecs", "encode"): codecs.encode,  # bytes under protocol 2
    }
    for name in ("set", "frozenset", "slice", "complex", "bytearray"):
        allowed[("builtins", name)] = getattr(builtins, name)
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(torch._utils, name):
            allowed[("torch._utils", name)] = getattr(torch._utils, name)
    for name in ("float16", "bfloat16", "float32", "float64", "half", "float", "double", "int8",
                 "int16", "int32", "int64", "uint8", "bool", "long", "int"):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[("torch", name)] = _StorageType(dtype)
        allowed[("torch.storage", name)] = _StorageType(dtype)
    # numpy scalars appear in fairseq's extra_state (e.g. the best validation score).
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = np.core.multiarray.scalar
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class (the only way a pickle reaches code) returns allowed
    objects or inert stand-ins."""

    _allowed: Optional[Dict[Tuple[str, str], Any]] = None

    def find_class(self, module, name):
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        # Protocol 2 pickles use Python 2 module names (__builtin__, copy_reg).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = RestrictedUnpickler._allowed.get((module, name))
        return found if found is not None else stand_in_class(module, name)


def to_plain(obj: Any, depth: int = 0) -> Any:
    """Dicts, lists and scalars from unpickled args/cfg: a Namespace becomes a dict, an omegaconf
    DictConfig/ListConfig its `_content`, a value node its `_val`, an enum member its value."""
    if depth > 64:
        raise ConversionError("checkpoint args/cfg are nested too deeply")
    if isinstance(obj, StandIn):
        state = obj.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = {**state[0], **(state[1] or {})}  # (__dict__, __slots__) state
        if isinstance(state, dict):
            if "_content" in state:
                return to_plain(state["_content"], depth + 1)
            if "_val" in state:
                return to_plain(state["_val"], depth + 1)
            return {k: to_plain(v, depth + 1) for k, v in state.items() if k != "_parent"}
        if obj.items:
            return {k: to_plain(v, depth + 1) for k, v in obj.items.items()}
        if obj.elements:
            return [to_plain(v, depth + 1) for v in obj.elements]
        if len(obj.args) == 1:
            return to_plain(obj.args[0], depth + 1)
        return repr(obj)
    if isinstance(obj, argparse.Namespace):
        obj = vars(obj)
    if isinstance(obj, dict):
        return {str(k): to_plain(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, depth + 1) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def resolve_interpolations(root: Dict[str, Any]) -> Dict[str, Any]:
    """Replaces omegaconf values "${a.b}" with what a.b holds in `root` (chains followed)."""

    def lookup(path: str, seen: Tuple[str, ...]) -> Any:
        if path in seen:
            raise ConversionError(f"cfg interpolation ${{{path}}} refers to itself")
        node: Any = root
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return "${" + path + "}"  # unresolved: left as is
            node = node[part]
        return resolve(node, seen + (path,))

    def resolve(value: Any, seen: Tuple[str, ...] = ()) -> Any:
        if isinstance(value, str):
            m = _INTERPOLATION.match(value)
            return lookup(m.group(1), seen) if m else value
        if isinstance(value, dict):
            return {k: resolve(v, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, seen) for v in value]
        return value

    return resolve(root)


def torch_load(path: str) -> Any:
    """Reads a torch.save zip archive (PyTorch >= 1.6) with the restricted unpickler. (torch.load
    is not used: the Debian build ignores its pickle_module argument, and it would hand
    TorchScript archives to torch.jit.load.)"""
    if not zipfile.is_zipfile(path):
        if tarfile.is_tarfile(path):
            raise ConversionError(f"{path}: PyTorch's pre-1.0 tar format is not supported")
        raise ConversionError(f"{path}: not a torch.save zip archive (a corrupt file, or one "
                              f"saved by PyTorch < 1.6, which is not supported)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if any(n.endswith("constants.pkl") for n in names):
                raise ConversionError(f"{path}: a TorchScript archive, not a checkpoint")
            pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ConversionError(f"{path}: expected one data.pkl in the archive, found "
                                      f"{len(pickles)}")
            prefix = pickles[0][:-len("data.pkl")]
            if prefix + "byteorder" in names and archive.read(prefix + "byteorder") != b"little":
                raise ConversionError(f"{path}: big-endian tensors are not supported")
            storages: Dict[str, Any] = {}

            def persistent_load(saved_id):
                if not (isinstance(saved_id, tuple) and len(saved_id) == 5
                        and saved_id[0] == "storage" and isinstance(saved_id[1], _StorageType)):
                    raise ConversionError(f"{path}: unexpected persistent id {saved_id!r}")
                _, storage_type, key, _, numel = saved_id
                if key not in storages:
                    data = bytearray(archive.read(f"{prefix}data/{key}"))
                    itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
                    if storage_type.dtype != torch.uint8 and len(data) != numel * itemsize:
                        raise ConversionError(f"{path}: storage {key} has {len(data)} bytes, "
                                              f"expected {numel} x {itemsize}")
                    flat = (torch.frombuffer(data, dtype=storage_type.dtype) if data
                            else torch.empty(0, dtype=storage_type.dtype))
                    storages[key] = flat.storage()
                return storages[key]

            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])))
            unpickler.persistent_load = persistent_load
            return unpickler.load()
    except ConversionError:
        raise
    except Exception as e:  # any failure of a corrupt or foreign file
        raise ConversionError(f"{path}: cannot read as a PyTorch checkpoint: "
                              f"{type(e).__name__}: {e}")


# -- the tensors mue needs (spec 3.7, src/model/ofa_model.cpp load_weights) ---------------------

SHARED_EMBEDDING = "encoder.embed_tokens.weight"
EMBEDDING_ALIASES = ("decoder.embed_tokens.weight", "decoder.output_projection.weight")
# Buffers OFA registers; the engine recomputes them (FORMAT.md).
BUFFER_NAMES = ("encoder.token_rp_bucket", "encoder.image_rp_bucket", "encoder.version",
                "decoder.token_rp_bucket", "decoder.image_rp_bucket", "decoder.image_position_idx",
                "decoder.version")


def is_buffer(name: str) -> bool:
    return name in BUFFER_NAMES or name.endswith(".num_batches_tracked")


def expected_tensors(c: Dict[str, Any]) -> Tuple[Dict[str, Shape], Dict[str, Shape]]:
    """(required, optional) name -> shape of a model.safetensors for config `c`."""
    d, h, f, v = c["d_model"], c["attention_heads"], c["ffn_dim"], c["vocab_size"]
    ib, tb, width = c["image_bucket_size"], c["token_bucket_size"], c["resnet_width"]
    nf = c["normformer"]
    req: Dict[str, Shape] = {}
    opt: Dict[str, Shape] = {}

    def norm(table, prefix, dim):
        table[prefix + ".weight"] = (dim,)
        table[prefix + ".bias"] = (dim,)

    def linear(prefix, out, inp):
        req[prefix + ".weight"] = (out, inp)
        req[prefix + ".bias"] = (out,)

    def conv_bn(conv, bn, out, inp, k):
        req[conv + ".weight"] = (out, inp, k, k)
        for p in ("weight", "bias", "running_mean", "running_var"):
            req[f"{bn}.{p}"] = (out,)

    def attention(prefix):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            linear(f"{prefix}.{proj}", d, d)
        if nf:
            req[prefix + ".c_attn"] = (h,)

    def ffn(prefix):
        norm(req, prefix + ".final_layer_norm", d)
        linear(prefix + ".fc1", f, d)
        linear(prefix + ".fc2", d, f)
        if nf:
            norm(req, prefix + ".ffn_layernorm", f)

    req[SHARED_EMBEDDING] = (v, d)
    norm(req, "encoder.layernorm_embedding", d)
    req["encoder.type_embedding.weight"] = (2, d)
    conv_bn("encoder.embed_images.conv1", "encoder.embed_images.bn1", width, 3, 7)
    channels = width
    for stage, blocks in enumerate(c["resnet_layers"]):
        planes = width * 2 ** stage
        for k in range(blocks):
            p = f"encoder.embed_images.layer{stage + 1}.{k}"
            conv_bn(p + ".conv1", p + ".bn1", planes, channels, 1)
            conv_bn(p + ".conv2", p + ".bn2", planes, planes, 3)
            conv_bn(p + ".conv3", p + ".bn3", 4 * planes, planes, 1)
            if k == 0:
                conv_bn(p + ".downsample.0", p + ".downsample.1", 4 * planes, channels, 1)
            channels = 4 * planes
    linear("encoder.image_proj", d, channels)
    norm(req, "encoder.patch_layernorm_embedding", d)
    req["encoder.embed_positions.weight"] = (c["max_source_positions"] + 2, d)
    req["encoder.embed_image_positions.weight"] = (ib * ib + 1, d)
    norm(req, "encoder.pos_ln", d)
    norm(req, "encoder.image_pos_ln", d)
    linear("encoder.pos_q_linear", d, d)
    linear("encoder.pos_k_linear", d, d)
    for i in range(c["encoder_layers"]):
        p = f"encoder.layers.{i}"
        attention(p + ".self_attn")
        norm(req, p + ".self_attn_layer_norm", d)
        if nf:
            norm(req, p + ".attn_ln", d)
        ffn(p)
        req[f"encoder.token_rel_pos_table_list.{i}.weight"] = (2 * tb - 1, h)
        req[f"encoder.image_rel_pos_table_list.{i}.weight"] = ((2 * ib - 1) ** 2 + 3, h)
    norm(req, "encoder.layer_norm", d)

    norm(req, "decoder.layernorm_embedding", d)
    req["decoder.embed_positions.weight"] = (c["max_target_positions"] + 2, d)
    norm(req, "decoder.pos_ln", d)
    for name in ("self_pos_q_linear", "self_pos_k_linear", "cross_pos_q_linear",
                 "cross_pos_k_linear"):
        linear("decoder." + name, d, d)
    for i in range(c["decoder_layers"]):
        p = f"decoder.layers.{i}"
        attention(p + ".self_attn")
        norm(req, p + ".self_attn_layer_norm", d)
        attention(p + ".encoder_attn")
        norm(req, p + ".encoder_attn_layer_norm", d)
        if nf:
            norm(req, p + ".self_attn_ln", d)
            norm(req, p + ".cross_attn_ln", d)
        ffn(p)
        req[f"decoder.token_rel_pos_table_list.{i}.weight"] = (2 * tb - 1, h)
        opt[f"decoder.image_rel_pos_table_list.{i}.weight"] = ((2 * ib - 1) ** 2 + 3, h)
    norm(req, "decoder.layer_norm", d)
    # Image generation only (FORMAT.md): kept when present so that the keys stay OFA's.
    opt["decoder.embed_image_positions.weight"] = (ib * ib + 1, d)
    norm(opt, "decoder.image_pos_ln", d)
    norm(opt, "decoder.code_layernorm_embedding", d)
    return req, opt


# -- the Hugging Face port's names (feature/add_transformers modeling_ofa.py) -------------------

HF_RENAMES = [
    (re.compile(r"^(encoder\.layers\.\d+)\.self_attn_mid_layer_norm\."), r"\1.attn_ln."),
    (re.compile(r"^(decoder\.layers\.\d+)\.self_attn_mid_layer_norm\."), r"\1.self_attn_ln."),
    (re.compile(r"^((?:en|de)coder\.layers\.\d+)\.ffn_layer_norm\."), r"\1.ffn_layernorm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn\."), r"\1.encoder_attn."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn_layer_norm\."),
     r"\1.encoder_attn_layer_norm."),
    (re.compile(r"^(decoder\.layers\.\d+)\.cross_attn_mid_layer_norm\."), r"\1.cross_attn_ln."),
]


def hf_to_ofa_name(name: str) -> str:
    for pattern, replacement in HF_RENAMES:
        name, n = pattern.subn(replacement, name)
        if n:
            break
    return name


# -- the checkpoint's declared settings ---------------------------------------------------------

# ofa.py (feature/MuE) architectures: what each fills in when the args lack it.
_OFA_COMMON_DEFAULTS = dict(
    max_source_positions=1024, max_target_positions=1024, token_bucket_size=256,
    image_bucket_size=42, attn_scale_factor=2, entangle_position_embedding=False,
    disable_entangle=False, scale_attn=False, scale_fc=False, scale_heads=False,
    scale_resids=False, no_scale_embedding=True, layernorm_embedding=True,
    patch_layernorm_embedding=True, add_type_embedding=True, share_all_embeddings=True,
    share_decoder_input_output_embed=True, encoder_normalize_before=True,
    decoder_normalize_before=True, activation_fn="gelu", orig_patch_image_size=256)
_OFA_ARCHS = {
    "ofa_tiny": (256, 4, 4, 4, "resnet50"),
    "ofa_medium": (512, 4, 4, 8, "resnet101"),
    "ofa_base": (768, 6, 6, 12, "resnet101"),
    "ofa_large": (1024, 12, 12, 16, "resnet152"),
    "ofa_huge": (1280, 24, 12, 16, "resnet152"),
}
RESNET_BLOCKS = {"resnet50": [3, 4, 6], "resnet101": [3, 4, 23], "resnet152": [3, 8, 36]}


def arch_defaults(arch: Optional[str]) -> Dict[str, Any]:
    defaults = dict(_OFA_COMMON_DEFAULTS)
    if arch in _OFA_ARCHS:
        d, enc, dec, heads, resnet = _OFA_ARCHS[arch]
        defaults.update(encoder_embed_dim=d, encoder_ffn_embed_dim=4 * d, encoder_layers=enc,
                        encoder_attention_heads=heads, decoder_layers=dec,
                        decoder_attention_heads=heads, resnet_type=resnet)
    return defaults


class Declared:
    """Settings a checkpoint declares, each with where it came from (for messages)."""

    def __init__(self, values: Dict[str, Any], source: str,
                 defaults: Optional[Dict[str, Any]] = None):
        self.values = dict(values)  # an explicit None means "not stated", as getattr gives it
        self.source = source
        self.defaults = defaults or {}

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.values:
            return self.values[key]
        return self.defaults.get(key, default)

    def where(self, key: str) -> str:
        if key in self.values:
            return f"{self.source}.{key}"
        return f"the architecture default of {key}"


def fairseq_settings(checkpoint: Dict[str, Any], path: str, warnings: List[str]) -> Declared:
    """The model settings of a fairseq checkpoint: `args` (argparse.Namespace), or `cfg`
    (omegaconf DictConfig; model settings in cfg.model, task settings such as patch_image_size in
    cfg.task)."""
    if checkpoint.get("args") is not None:
        values, source = to_plain(checkpoint["args"]), "args"
    elif checkpoint.get("cfg") is not None:
        cfg = to_plain(checkpoint["cfg"])
        if not isinstance(cfg, dict):
            raise ConversionError(f"{path}: 'cfg' is not a mapping")
        cfg = resolve_interpolations(cfg)
        model, task = cfg.get("model"), cfg.get("task")
        if not isinstance(model, dict):
            raise ConversionError(f"{path}: cfg has no 'model' section")
        values = {**(task if isinstance(task, dict) else {}), **model}
        source = "cfg.model"
    else:
        raise ConversionError(f"{path}: a fairseq checkpoint needs 'args' or 'cfg' to tell how "
                              f"OFA runs it; found keys {sorted(checkpoint)}")
    if not isinstance(values, dict):
        raise ConversionError(f"{path}: {source} is not a namespace or mapping")
    arch = values.get("arch") or values.get("_name")
    if arch not in _OFA_ARCHS:
        warnings.append(f"architecture {arch!r} is not one of OFA's {sorted(_OFA_ARCHS)}; "
                        f"settings the {source} lack are inferred from the tensors")
    declared = Declared(values, source, arch_defaults(arch))
    refuse_unsupported_fairseq(declared, path)
    return declared


def unsupported(a: Declared, flags, activation_key: str, same_sizes) -> List[str]:
    """Problems with settings mue does not implement: `flags` are (key, value that is
    unsupported, what it means); encoder and decoder sizes must agree."""
    problems = []
    for key, bad, what in flags:
        if (key in a.values or key in a.defaults) and bool(a.get(key)) == bad:
            problems.append(f"{key}={a.get(key)!r} ({what})")
    if a.get(activation_key, "gelu") != "gelu":
        problems.append(f"{activation_key}={a.get(activation_key)!r} (mue implements exact GELU)")
    for enc, dec in same_sizes:
        if a.get(dec) is not None and a.get(enc) is not None and a.get(dec) != a.get(enc):
            problems.append(f"{dec}={a.get(dec)} differs from {enc}={a.get(enc)}")
    return problems


_COMMON_FLAGS = (("layernorm_embedding", False, "no layernorm_embedding"),
                 ("patch_layernorm_embedding", False, "no patch_layernorm_embedding"),
                 ("add_type_embedding", False, "no type embedding"),
                 ("encoder_normalize_before", False, "post-norm encoder"),
                 ("decoder_normalize_before", False, "post-norm decoder"))


def refuse_unsupported_fairseq(a: Declared, path: str) -> None:
    problems = []
    # spec 3.6: OFA's decoder adds target positions to the token embedding unless
    # disable_entangle, because it tests `entangle_position_embedding is not None`.
    if a.get("entangle_position_embedding"):
        problems.append("entangle_position_embedding is set (positions added to the embeddings; "
                        "mue applies them only as attention biases, spec 3.4)")
    elif not a.get("disable_entangle"):
        problems.append("disable_entangle is not set, so OFA's decoder adds position embeddings "
                        "to its token embeddings (spec 3.6); mue does not implement that")
    flags = _COMMON_FLAGS + (
        ("no_scale_embedding", False, "embeddings scaled by sqrt(d_model)"),
        ("scale_resids", True, "NormFormer residual scaling (w_resid)"),
        ("encoder_prompt", True, "encoder prompt tuning"),
        ("decoder_prompt", True, "decoder prompt tuning"),
        ("adapter", True, "adapter layers"),
        ("cross_self_attention", True, "cross+self attention"),
        ("no_cross_attention", True, "a decoder without cross-attention"))
    problems += unsupported(a, flags, "activation_fn",
                            (("encoder_embed_dim", "decoder_embed_dim"),
                             ("encoder_attention_heads", "decoder_attention_heads"),
                             ("encoder_ffn_embed_dim", "decoder_ffn_embed_dim")))
    if problems:
        raise ConversionError(f"{path}: unsupported checkpoint settings: " + "; ".join(problems))


def hf_settings(config_path: str) -> Declared:
    try:
        with open(config_path) as f:
            values = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConversionError(f"{config_path}: cannot read: {e}")
    if not isinstance(values, dict):
        raise ConversionError(f"{config_path}: not a JSON object")
    if values.get("model_type", "ofa") != "ofa":
        raise ConversionError(f"{config_path}: model_type {values['model_type']!r} is not 'ofa'")
    a = Declared(values, "config.json")
    # The port adds positions to the embeddings when entangle_position_embedding is true.
    flags = _COMMON_FLAGS + (
        ("entangle_position_embedding", True, "positions added to the embeddings"),
        ("scale_embedding", True, "embeddings scaled by sqrt(d_model)"))
    problems = unsupported(a, flags, "activation_function",
                           (("encoder_attention_heads", "decoder_attention_heads"),
                            ("encoder_ffn_dim", "decoder_ffn_dim")))
    if problems:
        raise ConversionError(f"{config_path}: unsupported settings: " + "; ".join(problems))
    return a


# -- sizes from the tensors ---------------------------------------------------------------------


def layer_count(shapes: Dict[str, Shape], prefix: str) -> int:
    """n such that `prefix.0.` .. `prefix.{n-1}.` exist; a gap is an error."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    found = {int(m.group(1)) for m in map(pattern.match, shapes) if m}
    n = len(found)
    if found and found != set(range(n)):
        missing = sorted(set(range(max(found) + 1)) - found)
        raise ConversionError(f"{prefix} has indices {sorted(found)}; {prefix}.{missing[0]} is "
                              f"missing")
    return n


def shape_of(shapes: Dict[str, Shape], name: str) -> Shape:
    if name not in shapes:
        raise ConversionError(f"missing tensor {name}, which the model sizes are read from")
    return shapes[name]


def infer_sizes(shapes: Dict[str, Shape]) -> Dict[str, Any]:
    """Model sizes read off the tensor shapes (spec 3.7 names)."""
    vocab, d = shape_of(shapes, SHARED_EMBEDDING)
    heads = shape_of(shapes, "encoder.token_rel_pos_table_list.0.weight")[1]
    image_rows = shape_of(shapes, "encoder.embed_image_positions.weight")[0] - 1
    image_bucket = math.isqrt(image_rows)
    if image_bucket * image_bucket != image_rows:
        raise ConversionError(f"encoder.embed_image_positions.weight has {image_rows + 1} rows, "
                              f"not image_bucket_size^2 + 1")
    token_rows = shape_of(shapes, "encoder.token_rel_pos_table_list.0.weight")[0]
    if token_rows % 2 == 0:
        raise ConversionError(f"encoder.token_rel_pos_table_list.0.weight has {token_rows} rows, "
                              f"not 2 * token_bucket_size - 1")
    nf_parts = {part: any(f".{part}." in n or n.endswith(f".{part}") for n in shapes)
                for part in ("attn_ln", "ffn_layernorm", "c_attn")}
    if len(set(nf_parts.values())) != 1:
        raise ConversionError(f"partial NormFormer weights {nf_parts}: mue supports all of "
                              f"attn_ln/ffn_layernorm/c_attn (scale_attn, scale_fc, scale_heads) "
                              f"or none")
    return {
        "d_model": d,
        "vocab_size": vocab,
        "attention_heads": heads,
        "ffn_dim": shape_of(shapes, "encoder.layers.0.fc1.weight")[0],
        "encoder_layers": layer_count(shapes, "encoder.layers"),
        "decoder_layers": layer_count(shapes, "decoder.layers"),
        "resnet_layers": [layer_count(shapes, f"encoder.embed_images.layer{s}") for s in (1, 2, 3)],
        "resnet_width": shape_of(shapes, "encoder.embed_images.conv1.weight")[0],
        "max_source_positions": shape_of(shapes, "encoder.embed_positions.weight")[0] - 2,
        "max_target_positions": shape_of(shapes, "decoder.embed_positions.weight")[0] - 2,
        "token_bucket_size": (token_rows + 1) // 2,
        "image_bucket_size": image_bucket,
        "normformer": nf_parts["attn_ln"],
    }


def declared_sizes(a: Declared, layout: str) -> Dict[str, Tuple[Any, str]]:
    """Sizes the settings state, as {our config key: (value, where)}."""
    if layout == "hf":
        keys = dict(d_model="d_model", encoder_layers="encoder_layers",
                    decoder_layers="decoder_layers", attention_heads="encoder_attention_heads",
                    ffn_dim="encoder_ffn_dim", vocab_size="vocab_size",
                    max_source_positions="max_position_embeddings",
                    max_target_positions="max_position_embeddings",
                    token_bucket_size="token_bucket_size", image_bucket_size="image_bucket_size",
                    normformer="normformer")
    else:
        keys = dict(d_model="encoder_embed_dim", encoder_layers="encoder_layers",
                    decoder_layers="decoder_layers", attention_heads="encoder_attention_heads",
                    ffn_dim="encoder_ffn_embed_dim", max_source_positions="max_source_positions",
                    max_target_positions="max_target_positions",
                    token_bucket_size="token_bucket_size", image_bucket_size="image_bucket_size")
    out = {ours: (a.get(theirs), a.where(theirs)) for ours, theirs in keys.items()
           if a.get(theirs) is not None}
    if layout != "hf":
        flags = {k: bool(a.get(k)) for k in ("scale_attn", "scale_fc", "scale_heads")}
        if len(set(flags.values())) != 1:
            raise ConversionError(f"partial NormFormer settings {flags}: mue supports all of "
                                  f"scale_attn/scale_fc/scale_heads or none")
        out["normformer"] = (flags["scale_attn"], a.where("scale_attn"))
    resnet = a.get("resnet_type")
    if resnet is not None:
        if resnet not in RESNET_BLOCKS:
            raise ConversionError(f"{a.where('resnet_type')}={resnet!r} is not one of "
                                  f"{sorted(RESNET_BLOCKS)}")
        out["resnet_layers"] = (RESNET_BLOCKS[resnet], a.where("resnet_type") + f"={resnet}")
        out["resnet_width"] = (64, a.where("resnet_type") + f"={resnet}")
    return out


def reconcile(inferred: Dict[str, Any], declared: Dict[str, Tuple[Any, str]]) -> None:
    problems = [f"{where} says {value!r} but the tensors say {key}={inferred[key]!r}"
                for key, (value, where) in declared.items()
                if key in inferred and value != inferred[key]]
    if problems:
        raise ConversionError("settings and tensors disagree: " + "; ".join(problems))


# -- reading both layouts -----------------------------------------------------------------------


def find_hf_files(path: str) -> Optional[Tuple[str, str]]:
    """(pytorch_model.bin, config.json) when `path` is the HF port's folder or its weights file."""
    directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    weights = path if os.path.isfile(path) else os.path.join(path, "pytorch_model.bin")
    config = os.path.join(directory, "config.json")
    if os.path.basename(weights) == "pytorch_model.bin" and os.path.isfile(config):
        return weights, config
    return None


def state_tensors(state: Any, path: str) -> Dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: the state dict is a {type(state).__name__}, not a mapping")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: state dict entries that are not tensors: {bad[:10]}")
    return dict(state)


def read_checkpoint(path: str, warnings: List[str]):
    """(layout, tensors with OFA names, declared settings, renames applied)."""
    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file or directory")
    hf = find_hf_files(path)
    if hf is not None:
        weights, config = hf
        settings = hf_settings(config)
        state = state_tensors(torch_load(weights), weights)
        if state and all(k.startswith("model.") for k in state):
            state = {k[len("model."):]: v for k, v in state.items()}
        renamed = {}
        tensors = {}
        for name, tensor in state.items():
            ofa = hf_to_ofa_name(name)
            if ofa != name:
                renamed[name] = ofa
            if ofa in tensors:
                raise ConversionError(f"{weights}: {name} and another tensor both map to {ofa}")
            tensors[ofa] = tensor
        return "hf", tensors, settings, renamed
    if os.path.isdir(path):
        raise ConversionError(f"{path}: a directory without pytorch_model.bin and config.json")
    checkpoint = torch_load(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        hint = ""
        if isinstance(checkpoint, dict) and all(isinstance(v, torch.Tensor)
                                                for v in checkpoint.values()):
            hint = ("; it looks like a bare state dict: the HF port's pytorch_model.bin needs "
                    "its config.json beside it")
        raise ConversionError(f"{path}: not a fairseq checkpoint (a {type(checkpoint).__name__} "
                              f"without a 'model' state dict){hint}")
    settings = fairseq_settings(checkpoint, path, warnings)
    return "fairseq", state_tensors(checkpoint["model"], path), settings, {}


# -- conversion ---------------------------------------------------------------------------------


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    t = tensor.detach().cpu()
    if t.dtype not in (torch.float32, torch.float16):
        t = t.float()  # bf16 and float64 are widened/narrowed to float32
    return t.contiguous().numpy()


def dictionary_vocab_size(dict_path: str) -> int:
    """The vocabulary the C++ tokenizer builds from dict.txt: 4 specials, its lines, <mask>,
    8192 codes and 1000 bins (spec 3.2)."""
    try:
        with open(dict_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise ConversionError(f"{dict_path}: not UTF-8: {e}")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if len(line.rstrip().rsplit(" ", 1)) != 2:
            raise ConversionError(f"{dict_path}: line {number} is not '<symbol> <count>'")
    return 4 + len(lines) + 1 + 8192 + 1000


def build_config(layout: str, a: Declared, sizes: Dict[str, Any], options,
                 warnings: List[str]) -> Dict[str, Any]:
    config: Dict[str, Any] = {"format": ofa_reference.config.FORMAT_NAME,
                              "format_version": ofa_reference.config.FORMAT_VERSION}
    source = os.path.normpath(os.path.abspath(options.checkpoint))
    if layout == "hf" and os.path.isfile(source):
        source = os.path.dirname(source)  # the port's folder names the model
    config["name"] = options.name or os.path.basename(source).removesuffix(".pt")
    config.update(sizes)
    config["attn_scale_factor"] = float(a.get("attn_scale_factor", 2.0))
    config["layer_norm_eps"] = 1e-5
    if layout == "fairseq":
        trained_mode = "decomposed" if a.get("train_mue") else "joint"
    else:
        trained_mode = "joint"  # the HF port has only OFA's joint encoder
    mode = options.encoder_mode or trained_mode
    if mode != trained_mode:
        warnings.append(f"encoder mode {mode} differs from the mode the checkpoint was trained "
                        f"with ({trained_mode}); spec 5.6: that combination is untested")
    config["encoder_mode"] = mode
    if options.image_size is not None:
        size = options.image_size
    elif a.get("patch_image_size") is not None:
        size = int(a.get("patch_image_size"))
    else:
        size = 480
        warnings.append("the checkpoint states no image size; using 480 (spec 3.8); "
                        "pass --image-size to choose")
    hw = [size, size] if isinstance(size, int) else list(size)
    if any(n % 16 for n in hw):
        raise ConversionError(f"image size {hw} is not a multiple of 16 (the ResNet stride)")
    if any(n // 16 > config["image_bucket_size"] for n in hw):
        raise ConversionError(f"image size {hw} gives a {hw[0] // 16}x{hw[1] // 16} grid, larger "
                              f"than image_bucket_size {config['image_bucket_size']}; pass a "
                              f"smaller --image-size")
    if a.get("interpolate_position") and max(hw) > int(a.get("orig_patch_image_size", 256)):
        raise ConversionError(f"{a.where('interpolate_position')} is set and the image size "
                              f"{hw} exceeds orig_patch_image_size: OFA interpolates image "
                              f"positions then, which mue does not")
    config["image_size"] = hw
    if a.get("imagenet_default_mean_and_std"):
        config["image_mean"], config["image_std"] = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    else:
        config["image_mean"], config["image_std"] = [0.5] * 3, [0.5] * 3
    if layout == "hf":
        ids = {"bos_id": a.get("bos_token_id", 0), "pad_id": a.get("pad_token_id", 1),
               "eos_id": a.get("eos_token_id", 2), "unk_id": 3}
    else:
        ids = {"bos_id": 0, "pad_id": 1, "eos_id": 2, "unk_id": 3}  # fairseq Dictionary
    config.update(ids)
    order = ("format", "format_version", "name", "d_model", "encoder_layers", "decoder_layers",
             "attention_heads", "ffn_dim", "resnet_layers", "resnet_width", "vocab_size",
             "max_source_positions", "max_target_positions", "token_bucket_size",
             "image_bucket_size", "attn_scale_factor", "layer_norm_eps", "normformer",
             "encoder_mode", "image_size", "image_mean", "image_std", "bos_id", "pad_id",
             "eos_id", "unk_id")
    config = {key: config[key] for key in order}  # models/FORMAT.md's order
    try:
        return ofa_reference.normalize_config(config, source="converted config")
    except ValueError as e:
        raise ConversionError(str(e))


def convert(options) -> Dict[str, Any]:
    warnings: List[str] = []
    layout, tensors, settings, renamed = read_checkpoint(options.checkpoint, warnings)
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}

    # The tied embedding: one matrix under up to three names (spec 3.7).
    aliases = [n for n in EMBEDDING_ALIASES if n in tensors]
    if SHARED_EMBEDDING not in tensors and aliases:
        tensors[SHARED_EMBEDDING] = tensors[aliases[0]]
        shapes[SHARED_EMBEDDING] = shapes[aliases[0]]
    for alias in aliases:
        if shapes[alias] != shapes[SHARED_EMBEDDING] or not torch.equal(tensors[alias],
                                                                       tensors[SHARED_EMBEDDING]):
            raise ConversionError(f"{alias} differs from {SHARED_EMBEDDING}: mue needs one shared "
                                  f"embedding (share_all_embeddings)")

    try:
        sizes = infer_sizes(shapes)
        reconcile(sizes, declared_sizes(settings, layout))
        config = build_config(layout, settings, sizes, options, warnings)
    except ConversionError as e:
        raise ConversionError(f"{options.checkpoint}: {e}")
    required, optional = expected_tensors(config)

    problems = [f"missing {n} {list(s)}" for n, s in required.items() if n not in shapes]
    problems += [f"{n} has shape {list(shapes[n])}, expected {list(s)}"
                 for n, s in {**required, **optional}.items() if n in shapes and shapes[n] != s]
    if problems:
        raise ConversionError(f"{options.checkpoint}: {len(problems)} problem(s) with the "
                              f"tensors: " + "; ".join(problems))
    buffers = sorted(n for n in tensors if is_buffer(n))
    unknown = sorted(n for n in tensors if n not in required and n not in optional
                     and n not in EMBEDDING_ALIASES and not is_buffer(n))
    if unknown:
        warnings.append(f"{len(unknown)} tensor(s) mue does not use were left out: "
                        + ", ".join(unknown[:20]) + (" ..." if len(unknown) > 20 else ""))
    if options.bpe_dir:
        files = [os.path.join(options.bpe_dir, f)
                 for f in ("encoder.json", "vocab.bpe", "dict.txt")]
        for f in files:
            if not os.path.isfile(f):
                raise ConversionError(f"--bpe-dir: {f} does not exist")
        tokenizer_vocab = dictionary_vocab_size(files[2])
        if tokenizer_vocab != config["vocab_size"]:
            raise ConversionError(f"{files[2]} gives a vocabulary of {tokenizer_vocab} (4 "
                                  f"specials, its lines, <mask>, 8192 codes, 1000 bins) but the "
                                  f"embedding has {config['vocab_size']} rows")

    # Written in the checkpoint's order; float tensors as F32, or F16 with --fp16.
    names = [n for n in tensors if n in required or n in optional]
    if SHARED_EMBEDDING not in names:
        names.insert(0, SHARED_EMBEDDING)
    dtype = "F16" if options.fp16 else "F32"

    def arrays() -> Iterator[np.ndarray]:
        for name in names:
            a = to_numpy(tensors[name])
            if options.fp16:
                a32 = a.astype(np.float32, copy=False)
                if np.abs(a32).max(initial=0) > np.finfo(np.float16).max:
                    raise ConversionError(f"{name} has values beyond the float16 range; "
                                          f"convert without --fp16")
                a = a32.astype(np.float16)
            yield a

    os.makedirs(options.out, exist_ok=True)
    weights = os.path.join(options.out, ofa_reference.checkpoint.WEIGHTS_FILE)
    partial = weights + ".partial"
    try:
        safetensors_np.save_stream([(n, dtype, shapes[n]) for n in names], arrays(), partial,
                                   metadata={"format": "pt", "source": os.path.basename(
                                       os.path.normpath(options.checkpoint))})
        os.replace(partial, weights)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    ofa_reference.write_config(config, options.out)
    if options.bpe_dir:
        for f in ("encoder.json", "vocab.bpe", "dict.txt"):
            shutil.copyfile(os.path.join(options.bpe_dir, f), os.path.join(options.out, f))

    report = {
        "source": os.path.abspath(options.checkpoint),
        "layout": layout,
        "settings_from": settings.source,
        "config": config,
        "dtype": dtype,
        "tensors_written": len(names),
        "parameters": int(sum(np.prod(shapes[n]) for n in names)),
        "renamed": renamed,
        "dropped_aliases": aliases,
        "dropped_buffers": buffers,
        "unknown_keys": unknown,
        "warnings": warnings,
    }
    with open(os.path.join(options.out, "conversion_report.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="fairseq .pt file, or the HF port's folder (or its "
                                           "pytorch_model.bin beside config.json)")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--bpe-dir", help="folder with encoder.json, vocab.bpe and dict.txt to "
                                          "copy in")
    parser.add_argument("--encoder-mode", choices=("joint", "decomposed"),
                        help="default: decomposed if the checkpoint was trained with --train-mue, "
                             "else joint")
    parser.add_argument("--image-size", type=parse_image_size,
                        help="N or HxW (default: the checkpoint's patch_image_size, else 480)")
    parser.add_argument("--fp16", action="store_true", help="store the weights as float16")
    parser.add_argument("--name", help="model name in config.json (default: from the file name)")
    options = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    try:
        report = convert(options)
    except (ConversionError, safetensors_np.SafetensorsError, OSError) as e:
        print(f"convert_checkpoint: error: {e}", file=sys.stderr)
        return 1
    for w in report["warnings"]:
        print(f"convert_checkpoint: warning: {w}", file=sys.stderr)
    c = report["config"]
    print(f"{report['layout']} checkpoint ({report['settings_from']}) -> {options.out}: "
          f"{report['tensors_written']} tensors, {report['parameters']:,} parameters "
          f"({report['dtype']}); d_model {c['d_model']}, {c['encoder_layers']}+"
          f"{c['decoder_layers']} layers, {c['attention_heads']} heads, ResNet "
          f"{c['resnet_layers']}, encoder {c['encoder_mode']}, image {c['image_size']}, "
          f"{len(report['unknown_keys'])} unknown key(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
