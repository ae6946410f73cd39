#!/usr/bin/env python3
"""The layer-wise similarity curves the exit controller sees, on dump samples (PyTorch reference).

  similarity_curves.py --model DIR --ve-dump DIR --caption-dump DIR [--limit N]
      [--json OUT.json] [--png OUT.png]

For every layer l of each stack: cos(output of l, input of l) per sample, exactly as the exit
controller computes it for layers 1..N-1 (the last layer always ends a stack;
tools/ofa_reference/mue.py: over the sample's whole valid tensor; in beam
search over all beams of a sentence), with no exits taken. Reports per stack and layer the
median and the 5th / 95th percentiles, for VE also per object count, so one can see where
thresholds can separate easy from hard samples. The decoder's curves are VE's single pass and
captioning's beam search (every step). Writes JSON and, where matplotlib is installed (Debian's
python3-matplotlib), a PNG.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import export_default_model as X  # noqa: E402
from ofa_reference import mue  # noqa: E402
from scenes import pre_caption, prompts  # noqa: E402

# Just below 1: every layer is tested (so every cosine is recorded), none exits in practice.
NEVER = 1.0 - 1e-12


def read_manifest(dump: str, limit: int) -> List[dict]:
    with open(os.path.join(dump, "manifest.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()][:limit]


def layer_of(records, where_prefix: str) -> Dict[int, List[float]]:
    """layer (1-based) -> cosines of the records whose `where` starts with where_prefix."""
    out: Dict[int, List[float]] = collections.defaultdict(list)
    for r in records:
        if r["where"].startswith(where_prefix):
            out[r["layer"] + 1].append(r["cosine"])
    return out


def summary(by_layer: Dict[int, List[float]]) -> Dict[str, List[float]]:
    layers = sorted(by_layer)
    q = [np.percentile(by_layer[l], [5, 50, 95]) for l in layers]
    return {"layer": layers, "p5": [float(v[0]) for v in q], "median": [float(v[1]) for v in q],
            "p95": [float(v[2]) for v in q], "samples": [len(by_layer[l]) for l in layers]}


def ve_curves(ev: X.Evaluator, dump: str, limit: int, batch: int = 64) -> dict:
    lines = read_manifest(dump, limit)
    policy = mue.ExitPolicy(exit_threshold_image=NEVER, exit_threshold_text=NEVER,
                            exit_threshold_decoder=NEVER)
    pad = ev.config["pad_id"]
    records: Dict[str, Dict[int, List[float]]] = {k: collections.defaultdict(list)
                                                  for k in ("image", "text", "decoder")}
    # stream -> object count -> layer -> cosines
    by_objects = {k: collections.defaultdict(lambda: collections.defaultdict(list))
                  for k in records}
    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        images = ev.images(dump, [x["image"] for x in chunk])
        src = ev.batcher.pad_rows([
            [ev.config["bos_id"]] + ev.batcher.ids(prompts.ve_prompt(
                pre_caption(x.get("premise", "")), pre_caption(x["hypothesis"])))
            + [ev.config["eos_id"]] for x in chunk])
        lengths = src.ne(pad).sum(1)
        prev = src[:, :-1].clone()
        for r, n in enumerate(lengths.tolist()):
            prev[r, n - 1:] = pad
        m = mue.Margins()
        eo = mue.encode(ev.model, images, src, policy, m)
        mue.score_ve(ev.model, eo, prev, policy, m)
        # No sample exits, so each layer's records list the whole batch in order.
        seen = collections.Counter()
        for r in m.cosine_records:
            key = {"image": "image", "text": "text", "ve": "decoder"}[r["where"]]
            layer = r["layer"] + 1
            sample = chunk[seen[(key, layer)]]
            seen[(key, layer)] += 1
            records[key][layer].append(r["cosine"])
            by_objects[key][sample.get("num_objects")][layer].append(r["cosine"])
    out = {key: summary(v) for key, v in records.items()}
    out["by_num_objects"] = {
        key: {str(k): {"layer": sorted(v), "median": [float(np.median(v[l])) for l in sorted(v)]}
              for k, v in sorted(per.items(), key=lambda kv: str(kv[0]))}
        for key, per in by_objects.items()}
    out["pairs"] = len(lines)
    return out


def caption_curves(ev: X.Evaluator, dump: str, limit: int, batch: int = 25) -> dict:
    lines = read_manifest(dump, limit)
    policy = mue.ExitPolicy(exit_threshold_image=NEVER, exit_threshold_text=NEVER,
                            exit_threshold_decoder=NEVER)
    task = ev.config["tasks"]["caption"]
    options = mue.GenerationOptions(beam_size=task["beam_size"], max_len=task["max_len"],
                                    min_len=task["min_len"],
                                    no_repeat_ngram_size=task["no_repeat_ngram_size"],
                                    length_penalty=task["length_penalty"])
    recs = []
    for start in range(0, len(lines), batch):
        chunk = lines[start:start + batch]
        images = ev.images(dump, [x["image"] for x in chunk])
        src = torch.tensor([[ev.config["bos_id"]] + ev.batcher.caption_src
                            + [ev.config["eos_id"]]] * len(chunk))
        m = mue.Margins()
        eo = mue.encode(ev.model, images, src, policy, m)
        mue.beam_search(ev.model, eo, options, policy, m)
        recs.extend(r for r in m.cosine_records if r["where"].startswith("step"))
    return {"decoder": summary(layer_of(recs, "step")), "images": len(lines)}


def plot(curves: dict, path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (apt-get install python3-matplotlib): no PNG",
              file=sys.stderr)
        return False
    panels = [("image stream (VE)", curves["ve"]["image"]),
              ("text stream (VE)", curves["ve"]["text"]),
              ("decoder (VE, one pass)", curves["ve"]["decoder"]),
              ("decoder (captioning, every step)", curves["caption"]["decoder"])]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (title, c) in zip(axes, panels):
        ax.fill_between(c["layer"], c["p5"], c["p95"], alpha=0.3, label="5-95%")
        ax.plot(c["layer"], c["median"], marker="o", label="median")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(min(0.0, min(c["p5"])), 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cos(layer output, layer input)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--ve-dump", required=True)
    ap.add_argument("--caption-dump", required=True)
    ap.add_argument("--limit", type=int, default=400, help="VE pairs (captions: a quarter)")
    ap.add_argument("--json")
    ap.add_argument("--png")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ev = X.Evaluator(args.model)
    curves = {"ve": ve_curves(ev, args.ve_dump, args.limit),
              "caption": caption_curves(ev, args.caption_dump, max(1, args.limit // 4))}
    text = json.dumps(curves, indent=1)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    for name, c in (("image", curves["ve"]["image"]), ("text", curves["ve"]["text"]),
                    ("decoder VE", curves["ve"]["decoder"]),
                    ("decoder caption", curves["caption"]["decoder"])):
        print(f"{name:16s} " + "  ".join(f"L{l}: {m:.4f} [{a:.4f}, {b:.4f}]" for l, m, a, b in
                                        zip(c["layer"], c["median"], c["p5"], c["p95"])))
    if args.png:
        plot(curves, args.png)


if __name__ == "__main__":
    main()
