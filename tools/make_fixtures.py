#!/usr/bin/python3
"""Writes the parity fixtures: reference inputs and outputs of random-weight models.

Each case is a directory with config.json (the model), case.json (weight seed, the stored
parameter list, description) and io.safetensors (inputs and reference outputs). The weights are
not stored: they come from tests/fixtures/SYNTHETIC_WEIGHTS.md with the case's seed.

  /usr/bin/python3 tools/make_fixtures.py --out tests/fixtures/parity
  /usr/bin/python3 tools/make_fixtures.py --sizes --out tests/fixtures/parity_sizes

The output is byte-identical from run to run (single-threaded torch, seeded numpy inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ofa_reference  # noqa: E402
import safetensors_np  # noqa: E402

NUM_SPREAD_IDS = 64  # logits kept per position when the vocabulary is large
SMALL_VOCAB = 1000  # up to this size every logit is kept


@dataclass(frozen=True)
class Case:
    name: str
    size: str  # "test", or an OFA size ("tiny" ... "huge": its real shapes)
    encoder_mode: str
    image_size: Tuple[int, int]  # (height, width)
    seed: int  # weights and inputs
    src_lengths: Sequence[int]  # per row, including bos/eos
    tgt_lengths: Sequence[int]  # per row, including the leading bos

    @property
    def description(self) -> str:
        h, w = self.image_size
        return (f"{self.size} config, {self.encoder_mode} encoder, {h}x{w} images, batch "
                f"{len(self.src_lengths)}, source lengths {list(self.src_lengths)}, target "
                f"lengths {list(self.tgt_lengths)}; weights: synthetic recipe, seed {self.seed}")


CASES: List[Case] = [
    Case("test_decomposed_64", "test", "decomposed", (64, 64), 101, (12, 5, 1), (6, 3, 1)),
    Case("test_joint_64", "test", "joint", (64, 64), 102, (9, 12, 2), (4, 6, 2)),
    Case("test_decomposed_64x96", "test", "decomposed", (64, 96), 103, (7, 3), (5, 6)),
    Case("test_joint_96x32", "test", "joint", (96, 32), 104, (4, 11), (6, 1)),
    Case("test_joint_32", "test", "joint", (32, 32), 105, (10, 6, 3), (3, 5, 6)),
    Case("test_decomposed_32_nopad", "test", "decomposed", (32, 32), 106, (8, 8), (4, 4)),
    Case("tiny_decomposed_64", "tiny", "decomposed", (64, 64), 201, (12, 6, 2), (6, 4, 1)),
    Case("tiny_joint_96", "tiny", "joint", (96, 96), 202, (8, 3), (5, 6)),
    Case("tiny_joint_32", "tiny", "joint", (32, 32), 203, (5, 12, 1), (2, 6, 3)),
    Case("tiny_decomposed_32x64", "tiny", "decomposed", (32, 64), 204, (11, 4), (6, 3)),
]

# Every other OFA size at its real shapes (width, heads, head dim, depth, ResNet stages), both
# encoder modes, at a 32x32 image (a 2x2 grid) so that the largest stays quick (--sizes).
SIZE_CASES: List[Case] = [
    Case("medium_decomposed_32", "medium", "decomposed", (32, 32), 301, (9, 4), (5, 2)),
    Case("medium_joint_32", "medium", "joint", (32, 32), 302, (6, 9), (3, 5)),
    Case("large_decomposed_32", "large", "decomposed", (32, 32), 401, (8, 5), (4, 3)),
    Case("large_joint_32", "large", "joint", (32, 32), 402, (5, 8), (5, 2)),
    Case("huge_decomposed_32", "huge", "decomposed", (32, 32), 501, (7, 4), (4, 3)),
    Case("huge_joint_32", "huge", "joint", (32, 32), 502, (4, 7), (3, 4)),
]


def logit_ids(vocab_size: int) -> np.ndarray:
    """Every id of a small vocabulary; else 0..7 and ids spread evenly up to vocab_size - 1."""
    if vocab_size <= SMALL_VOCAB:
        return np.arange(vocab_size, dtype=np.int64)
    spread = np.linspace(8, vocab_size - 1, NUM_SPREAD_IDS - 8).round().astype(np.int64)
    return np.concatenate([np.arange(8, dtype=np.int64), spread])


def make_inputs(case: Case, config, rng: np.random.Generator):
    """Images uniform in [-1, 1); src = [bos, random, eos] (a length-1 row is [bos]);
    prev_output = [bos, random]; rows right-padded with pad_id. Random tokens avoid ids 0..3."""
    h, w = case.image_size
    batch = len(case.src_lengths)
    bos, eos, pad, vocab = (config[k] for k in ("bos_id", "eos_id", "pad_id", "vocab_size"))
    images = rng.uniform(-1.0, 1.0, size=(batch, 3, h, w)).astype(np.float32)
    src = np.full((batch, max(case.src_lengths)), pad, dtype=np.int64)
    for row, n in enumerate(case.src_lengths):
        src[row, :n] = rng.integers(4, vocab, size=n)
        src[row, 0] = bos
        if n > 1:
            src[row, n - 1] = eos
    prev = np.full((batch, max(case.tgt_lengths)), pad, dtype=np.int64)
    for row, n in enumerate(case.tgt_lengths):
        prev[row, :n] = rng.integers(4, vocab, size=n)
        prev[row, 0] = bos
    return images, src, prev


def run_case(case: Case, out_dir: str) -> None:
    config = ofa_reference.make_config(case.size, case.encoder_mode, list(case.image_size),
                                       name=f"parity-{case.name}")
    model = ofa_reference.synthetic_model(config, case.seed)
    images, src, prev = make_inputs(case, config, np.random.default_rng(case.seed))
    ids = torch.from_numpy(logit_ids(config["vocab_size"]))

    encoder_out = model.encode(torch.from_numpy(images), torch.from_numpy(src))
    full = model.decoder.logits(model.decoder(torch.from_numpy(prev), encoder_out))
    state = model.start_decoding(encoder_out, prev.shape[1])
    steps = torch.stack([model.decode_step(torch.from_numpy(prev[:, t]), state)
                         for t in range(prev.shape[1])], dim=1)

    tensors = {
        "patch_images": images,
        "src_tokens": src,
        "prev_output_tokens": prev,
        "encoder_out": encoder_out.hidden.numpy(),
        "decoder_logits_ids": ids.numpy(),
        "decoder_logits": full[..., ids].numpy(),
        "decoder_logsumexp": torch.logsumexp(full, dim=-1).numpy(),
        "incremental_logits": steps[..., ids].numpy(),
        "incremental_logsumexp": torch.logsumexp(steps, dim=-1).numpy(),
    }
    directory = os.path.join(out_dir, case.name)
    os.makedirs(directory, exist_ok=True)
    ofa_reference.write_config(config, directory)
    case_info = {
        "seed": case.seed,
        "description": case.description,
        "src_lengths": list(case.src_lengths),
        "tgt_lengths": list(case.tgt_lengths),
        "parameters": [[n, list(s)] for n, s in ofa_reference.parameter_specs(model)],
    }
    with open(os.path.join(directory, "case.json"), "w") as f:
        json.dump(case_info, f, indent=1)
        f.write("\n")
    safetensors_np.save_file(tensors, os.path.join(directory, "io.safetensors"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="fixture directory (cases are replaced)")
    parser.add_argument("--only", nargs="*", default=None, help="case names to (re)write")
    parser.add_argument("--sizes", action="store_true",
                        help="the medium, large and huge cases (tests/fixtures/parity_sizes)")
    args = parser.parse_args(argv)
    cases = SIZE_CASES if args.sizes else CASES
    names = {c.name for c in cases}
    unknown = set(args.only or ()) - names
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {sorted(names)}")

    torch.set_grad_enabled(False)
    torch.set_num_threads(1)  # same reductions every run: byte-identical fixtures
    for case in cases:
        if args.only and case.name not in args.only:
            continue
        shutil.rmtree(os.path.join(args.out, case.name), ignore_errors=True)
        run_case(case, args.out)
        size = sum(os.path.getsize(os.path.join(args.out, case.name, f))
                   for f in os.listdir(os.path.join(args.out, case.name)))
        print(f"{case.name}: {case.description} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
