#!/usr/bin/python3
"""Writes the fuzz targets' seed corpora (tests/fuzz/corpus/<target>/) from the project's own
fixtures and the shipped model: small files, a few per target. Run from anywhere."""
import io
import json
import os
import struct

import numpy as np
from PIL import Image

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
MODEL = os.path.join(ROOT, "models", "mue-scenes-small")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, align=True, metadata=None):
    header, blobs, offset = {}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header)
    if align:
        text += " " * ((-len(text) - 8) % 8)
    return struct.pack("<Q", len(text)) + text.encode() + b"".join(blobs)


def main():
    rng = np.random.default_rng(18)
    f32 = rng.standard_normal((2, 3)).astype("<f4").tobytes()
    f16 = rng.standard_normal((4,)).astype("<f2").tobytes()
    bf16 = (rng.standard_normal((3,)).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    put("safetensors", "f32_f16_bf16", safetensors(
        {"a.weight": ("F32", [2, 3], f32), "b": ("F16", [4], f16), "c": ("BF16", [3], bf16)},
        metadata={"format": "pt"}))
    put("safetensors", "misaligned_f32", safetensors({"x": ("F32", [2, 3], f32)}, align=False))
    put("safetensors", "ints_and_empty", safetensors({
        "i8": ("I8", [3], b"\x01\x02\xff"), "u8": ("U8", [1], b"\x07"),
        "i32": ("I32", [2], struct.pack("<2i", 5, -6)), "i64": ("I64", [1], struct.pack("<q", 9)),
        "empty": ("F32", [0, 4], b""), "scalar": ("F32", [], struct.pack("<f", 1.5))}))
    put("safetensors", "tied_embedding", safetensors(
        {"encoder.embed_tokens.weight": ("F16", [2, 2], f16)}))

    with open(os.path.join(MODEL, "config.json"), "rb") as f:
        put("config", "mue-scenes-small.json", f.read())
    for case in ("parity/tiny_joint_32", "exits/test_joint_calm"):
        with open(os.path.join(ROOT, "tests", "fixtures", case, "config.json"), "rb") as f:
            put("config", case.replace("/", "_") + ".json", f.read())

    for task in ("caption", "entail"):
        with open(os.path.join(MODEL, f"exit_policy.{task}.json"), "rb") as f:
            put("exit_policy", f"{task}.json", f.read())
    put("exit_policy", "calm_reference.json", json.dumps({
        "exit_threshold_image": 0.9, "exit_threshold_text": 0.95, "exit_threshold_decoder": 0.8,
        "decoder_schedule": "calm", "calm_beta": 0.5, "calm_tau": 4.0,
        "skipped_layer_cache": "reference"}))
    put("exit_policy", "fixed.json", json.dumps(
        {"fixed_depth_image": 2, "fixed_depth_text": 3, "fixed_depth_decoder": 1,
         "decoder_schedule": "decaying"}))

    scene = Image.open(os.path.join(MODEL, "example.png")).convert("RGB").resize((16, 12))
    def encoded(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()
    put("image", "rgb.png", encoded(scene, "PNG"))
    put("image", "rgba_interlaced.png", encoded(scene.convert("RGBA"), "PNG", interlace=1))
    put("image", "palette.png", encoded(scene.quantize(8), "PNG"))
    put("image", "grey16.png", encoded(Image.fromarray(
        (np.asarray(scene.convert("L"), dtype=np.uint16) * 257)), "PNG"))
    put("image", "bilevel.png", encoded(scene.convert("1"), "PNG"))
    put("image", "rgb.jpg", encoded(scene, "JPEG", quality=80))
    put("image", "grey_progressive.jpg", encoded(scene.convert("L"), "JPEG", progressive=True))
    put("image", "cmyk.jpg", encoded(scene.convert("CMYK"), "JPEG"))

    put("tokenizer", "caption", " what does the image describe? a red shirt on a blue bag")
    put("tokenizer", "entail", ' can image and text1 " two items " imply text2 " a shoe "?')
    put("tokenizer", "mixed", "Ünïcödé 東京 😀 it's 42.5% -- <person> /a/b!!!\n\t\r  x")
    put("tokenizer", "invalid_utf8", b"ok \xff\xfe \xc3( \xe2\x82 end")

    img = "image.png"
    put("dump", "ve.jsonl", "\n".join(json.dumps(x) for x in [
        {"id": "a", "image": img, "hypothesis": "a shoe", "label": "entailment"},
        {"id": "b", "image": img, "premise": "two items", "hypothesis": "a bag", "label": "neutral"},
        {"id": "c", "image": img, "hypothesis": "a hat", "label": "contradiction"},
    ]) + "\n")
    put("dump", "caption.jsonl", "\n".join(json.dumps(x) for x in [
        {"id": "a", "image": img, "references": ["a red shirt", "a shirt"]},
        {"id": "b", "image": img, "references": ["a bag"]},
    ]) + "\n")
    put("dump", "bad_lines.jsonl", "\ufeff" + "\n".join([
        json.dumps({"id": "a", "image": img, "hypothesis": "x", "label": "maybe"}),
        '{"id": "b", "image": "missing.png", "hypothesis": "x", "label": "neutral"}',
        '{"id": "c", "image": "../image.png", "hypothesis": "x", "label": 1e999}',
        "not json", "[1, 2]", "",
        json.dumps({"id": "a", "image": img, "hypothesis": "", "label": "entailment"}),
        json.dumps({"id": "d", "image": "/etc/passwd", "references": []}),
    ]) + "\n")


if __name__ == "__main__":
    main()
