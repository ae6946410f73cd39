#!/usr/bin/python3
"""Pillow references for the C++ image decoder and bicubic resize (tests/test_image.cpp).

For every input it writes what `Image.open(p).convert("RGB")` gives, and that image resized with
`.resize((w, h), Image.BICUBIC)` (spec 3.8), as raw HWC uint8 files, plus a manifest.json that
lists them. Inputs that Pillow refuses are listed with the error Pillow raised.

  pil_reference.py OUT_DIR --images DIR [--sizes 480x480 64x64]   # every *.jpg/*.png in DIR
  pil_reference.py OUT_DIR --edge-cases [--sizes ...]            # writes its own inputs first

The edge cases cover what real photos do not: 1x1, 3x2000, 2000x3, every PNG colour type and bit
depth (palette, tRNS, grey+alpha, 16-bit, interlaced), greyscale / CMYK / progressive / 4:4:4
JPEGs, upscaling, single-axis resizes; and bad files (truncated, random bytes, empty, a header
announcing too many pixels).

Exit status 3 means Pillow is not installed (the test skips).
"""

import argparse
import json
import os
import struct
import sys
import warnings
import zlib

try:
    import numpy as np
    import PIL
    from PIL import Image
except ImportError as e:  # the C++ test reports this and skips
    print(f"pil_reference.py: {e}", file=sys.stderr)
    sys.exit(3)


def parse_size(text):
    w, h = text.lower().split("x")
    return int(w), int(h)


def write_raw(path, image):
    data = np.asarray(image, dtype=np.uint8)
    assert data.shape == (image.height, image.width, 3), data.shape
    with open(path, "wb") as f:
        f.write(data.tobytes())


def reference(out_dir, index, input_path, sizes):
    """Decodes and resizes one input with Pillow; returns its manifest entry."""
    entry = {"input": os.path.abspath(input_path)}
    try:
        with Image.open(input_path) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "palette images with transparency ..."
            entry["pil_mode"] = im.mode
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any refusal is the reference behaviour
        entry["pil_error"] = f"{type(e).__name__}: {e}"
        return entry
    stem = f"{index:04d}"
    entry.update(width=rgb.width, height=rgb.height, decoded=os.path.join(out_dir, stem + ".rgb"))
    write_raw(entry["decoded"], rgb)
    entry["resized"] = []
    for w, h in sizes:
        raw = os.path.join(out_dir, f"{stem}.{w}x{h}.rgb")
        write_raw(raw, rgb.resize((w, h), Image.BICUBIC))
        entry["resized"].append({"width": w, "height": h, "raw": raw})
    return entry


# ---- A minimal PNG writer: Pillow cannot write every colour type / bit depth / interlace. ----

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]  # x0, y0, dx, dy


def png_chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def pack_rows(samples, bit_depth):
    """samples: [h, w, channels] integers -> filtered scanlines (filter type 0)."""
    out = bytearray()
    for row in samples:
        flat = row.reshape(-1)
        out.append(0)
        if bit_depth == 16:
            out += flat.astype(">u2").tobytes()
        elif bit_depth == 8:
            out += flat.astype(np.uint8).tobytes()
        else:
            per_byte = 8 // bit_depth
            padded = np.zeros(-(-len(flat) // per_byte) * per_byte, dtype=np.uint8)
            padded[: len(flat)] = flat
            groups = padded.reshape(-1, per_byte)
            packed = np.zeros(len(groups), dtype=np.uint8)
            for i in range(per_byte):
                packed |= groups[:, i] << (8 - bit_depth * (i + 1))
            out += packed.tobytes()
    return bytes(out)


def write_png(path, samples, color_type, bit_depth, palette=None, trns=None, interlace=False):
    h, w = samples.shape[:2]
    if interlace:
        raw = b"".join(pack_rows(samples[y0::dy, x0::dx], bit_depth)
                       for x0, y0, dx, dy in ADAM7 if samples[y0::dy, x0::dx].size)
    else:
        raw = pack_rows(samples, bit_depth)
    data = b"\x89PNG\r\n\x1a\n"
    data += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0,
                                            1 if interlace else 0))
    if palette is not None:
        data += png_chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        data += png_chunk(b"tRNS", trns)
    data += png_chunk(b"IDAT", zlib.compress(raw, 9))
    data += png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)
    return data


def make_edge_cases(input_dir):
    """Writes the edge-case inputs; returns [(path, extra sizes)]."""
    rng = np.random.default_rng(1234)
    os.makedirs(input_dir, exist_ok=True)
    cases = []

    def path(name):
        return os.path.join(input_dir, name)

    def smooth_rgb(w, h):
        # A gradient plus noise: smooth enough for JPEG, varied enough to exercise every weight.
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1),
                         (x + y) * 255 / max(w + h - 2, 1)], -1)
        return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)

    def add(name, extra=()):
        cases.append((path(name), list(extra)))

    # PNGs through Pillow's own writer.
    Image.fromarray(smooth_rgb(1, 1)).save(path("rgb_1x1.png"))
    add("rgb_1x1.png", [(1, 1), (3, 5)])
    Image.fromarray(smooth_rgb(3, 2000)).save(path("rgb_tall_3x2000.png"))
    add("rgb_tall_3x2000.png", [(3, 100), (9, 2000)])
    Image.fromarray(smooth_rgb(2000, 3)).save(path("rgb_wide_2000x3.png"))
    add("rgb_wide_2000x3.png", [(100, 3), (2000, 7)])
    Image.fromarray(smooth_rgb(37, 23)).save(path("rgb_37x23.png"))
    add("rgb_37x23.png", [(37, 23), (37, 60), (90, 23), (1, 1), (1000, 3)])
    rgba = np.concatenate([smooth_rgb(50, 40), rng.integers(0, 256, (40, 50, 1), np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(path("rgba_50x40.png"))
    add("rgba_50x40.png")

    # PNGs through the raw writer: every colour type and bit depth.
    grey = smooth_rgb(45, 31)[..., 0]
    write_png(path("grey8.png"), grey[..., None], 0, 8)
    add("grey8.png")
    for bits in (1, 2, 4):
        write_png(path(f"grey{bits}.png"), (grey >> (8 - bits))[..., None], 0, bits)
        add(f"grey{bits}.png")
    write_png(path("grey16.png"), rng.integers(0, 65536, (31, 45, 1)), 0, 16)
    add("grey16.png")  # Pillow's "I" mode: values above 255 clip to white
    write_png(path("grey16_low.png"), rng.integers(0, 300, (31, 45, 1)), 0, 16)
    add("grey16_low.png")
    write_png(path("grey8_trns.png"), grey[..., None], 0, 8, trns=struct.pack(">H", grey[0, 0]))
    add("grey8_trns.png")
    write_png(path("grey_alpha8.png"), np.stack([grey, 255 - grey], -1), 4, 8)
    add("grey_alpha8.png")
    write_png(path("grey_alpha16.png"), rng.integers(0, 65536, (31, 45, 2)), 4, 16)
    add("grey_alpha16.png")
    write_png(path("rgb16.png"), rng.integers(0, 65536, (31, 45, 3)), 2, 16)
    add("rgb16.png")
    write_png(path("rgba16.png"), rng.integers(0, 65536, (31, 45, 4)), 6, 16)
    add("rgba16.png")
    write_png(path("rgb8_trns.png"), smooth_rgb(45, 31), 2, 8, trns=struct.pack(">HHH", 1, 2, 3))
    add("rgb8_trns.png")
    palette = rng.integers(0, 256, (256, 3))
    indices = rng.integers(0, 256, (31, 45, 1))
    write_png(path("palette8.png"), indices, 3, 8, palette=palette)
    add("palette8.png")
    write_png(path("palette8_trns.png"), indices, 3, 8, palette=palette,
              trns=bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    add("palette8_trns.png")
    for bits in (1, 2, 4):
        write_png(path(f"palette{bits}.png"), indices >> (8 - bits), 3, bits,
                  palette=palette[: 1 << bits])
        add(f"palette{bits}.png")
    write_png(path("rgb8_interlaced.png"), smooth_rgb(45, 31), 2, 8, interlace=True)
    add("rgb8_interlaced.png")
    write_png(path("palette4_interlaced.png"), indices >> 4, 3, 4, palette=palette[:16],
              interlace=True)
    add("palette4_interlaced.png")

    # JPEGs through Pillow (the same libjpeg as the C++ side on this machine).
    photo = Image.fromarray(smooth_rgb(161, 97))
    photo.save(path("rgb420.jpg"), quality=90)
    add("rgb420.jpg", [(161, 97), (161, 300), (500, 97)])
    photo.save(path("rgb444.jpg"), quality=95, subsampling=0)
    add("rgb444.jpg")
    photo.save(path("rgb422.jpg"), quality=75, subsampling=1)
    add("rgb422.jpg")
    photo.save(path("rgb_progressive.jpg"), quality=85, progressive=True)
    add("rgb_progressive.jpg")
    Image.fromarray(smooth_rgb(17, 9)).save(path("rgb_odd_17x9.jpg"))
    add("rgb_odd_17x9.jpg")
    Image.fromarray(smooth_rgb(1, 1)).save(path("rgb_1x1.jpg"))
    add("rgb_1x1.jpg", [(1, 1), (2, 2)])
    Image.fromarray(smooth_rgb(3, 2000)).save(path("rgb_tall_3x2000.jpg"))
    add("rgb_tall_3x2000.jpg")
    Image.fromarray(smooth_rgb(2000, 3)).save(path("rgb_wide_2000x3.jpg"))
    add("rgb_wide_2000x3.jpg")
    photo.convert("L").save(path("grey.jpg"))
    add("grey.jpg")
    # Pillow writes CMYK inverted with an Adobe marker, as Photoshop does.
    Image.fromarray(np.concatenate([smooth_rgb(161, 97), smooth_rgb(161, 97)[..., :1]], -1),
                    "CMYK").save(path("cmyk.jpg"), quality=90)
    add("cmyk.jpg")

    # Bad files: Pillow refuses each; so must the C++ decoder.
    with open(path("rgb420.jpg"), "rb") as f:
        jpeg = f.read()
    with open(path("rgb_truncated.jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    add("rgb_truncated.jpg")
    with open(path("rgb8_interlaced.png"), "rb") as f:
        png = f.read()
    with open(path("rgb_truncated.png"), "wb") as f:
        f.write(png[: len(png) * 2 // 3])
    add("rgb_truncated.png")
    with open(path("random_bytes.jpg"), "wb") as f:
        f.write(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    add("random_bytes.jpg")
    with open(path("random_after_jpeg_magic.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff" + bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    add("random_after_jpeg_magic.jpg")
    open(path("empty.png"), "wb").close()
    add("empty.png")
    # Headers announcing 20000x20000 = 400 megapixels (Pillow's bomb limit is ~179 million).
    write_png(path("huge_header.png"), np.zeros((1, 1, 3), np.uint8), 2, 8)
    with open(path("huge_header.png"), "rb") as f:
        data = bytearray(f.read())
    data[16:24] = struct.pack(">II", 20000, 20000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    with open(path("huge_header.png"), "wb") as f:
        f.write(data)
    add("huge_header.png")
    sof = jpeg.index(b"\xff\xc0")
    huge = bytearray(jpeg)
    huge[sof + 5:sof + 9] = struct.pack(">HH", 20000, 20000)  # height, width
    with open(path("huge_header.jpg"), "wb") as f:
        f.write(huge)
    add("huge_header.jpg")
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="directory of .jpg/.png files")
    source.add_argument("--edge-cases", action="store_true", help="write and use edge cases")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(480, 480), (64, 64)],
                        help="WxH sizes every image is resized to")
    args = parser.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    if args.edge_cases:
        inputs = make_edge_cases(os.path.join(args.out_dir, "inputs"))
    else:
        names = sorted(n for n in os.listdir(args.images)
                       if n.lower().endswith((".jpg", ".jpeg", ".png")))
        inputs = [(os.path.join(args.images, n), []) for n in names]

    images = [reference(args.out_dir, i, p, args.sizes + extra)
              for i, (p, extra) in enumerate(inputs)]
    manifest = {"pillow": PIL.__version__, "images": images}
    with open(os.path.join(args.out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
