#!/usr/bin/env python3
"""Do exits adapt to the input? Exit depth per stream against scene difficulty.

  exit_analysis.py REPORT.json [--setting NAME ...] [--by num_objects,template,...]

REPORT.json is what `mue-bench --per-sample --json` writes; the dump it names must still be
there, since the difficulty fields (num_objects, template, num_occluders, clutter, ... as
tools/scenes/write_dumps.py writes them) are read from its manifest.jsonl by line number.
Prints, as Markdown, for every setting (all but full depth unless --setting): the spread of
exit depths per stream (mean, standard deviation, histogram), then the mean exit depth per
stream and the quality (VE accuracy, or agreement with full depth for captioning) for each
value of every --by field.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
from typing import Dict, List


def load_manifest(dump: str) -> Dict[int, dict]:
    path = os.path.join(dump, "manifest.jsonl")
    out = {}
    with open(path) as f:
        for number, text in enumerate(f, 1):
            if text.strip():
                try:
                    out[number] = json.loads(text)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}:{number}: not JSON ({e})")
    return out


def spread(values: List[float]) -> str:
    if not values:
        return "-"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} +- {sd:.2f}"


def histogram(values: List[int], depth: int) -> str:
    counts = collections.Counter(values)
    return " ".join(str(counts.get(k, 0)) for k in range(1, depth + 1))


def analyse(report: dict, names: List[str], fields: List[str]) -> str:
    dump = report["dump"]["dir"]
    task = report["dump"]["task"]
    manifest = load_manifest(dump)
    settings = report["settings"]
    base = next(s for s in settings if s["is_baseline"])
    if "per_sample" not in base:
        raise SystemExit("the report has no per-sample results: run mue-bench with --per-sample")
    base_pred = {r["id"]: r["prediction"] for r in base["per_sample"]}
    chosen = [s for s in settings if (s["name"] in names if names else not s["is_baseline"])]
    if names and len(chosen) != len(names):
        missing = set(names) - {s["name"] for s in chosen}
        raise SystemExit(f"no such setting in the report: {', '.join(sorted(missing))}")
    depth = {"image": len(base["exit_histograms"]["image"]),
             "text": len(base["exit_histograms"]["text"]),
             "decoder": len(base["exit_histograms"]["decoder"])}
    lines = [f"dump `{dump}` ({task}, {len(base['per_sample'])} samples)", ""]
    for s in chosen:
        rows = s["per_sample"]
        per_stream = {
            "image": [r["layers"]["image"] for r in rows],
            "text": [r["layers"]["text"] for r in rows],
            # a sample's decoder depth: the mean over its generated tokens
            "decoder": [statistics.mean(r["layers"]["decoder"]) for r in rows
                        if r["layers"]["decoder"]]}
        lines += [f"### {s['name']}", "",
                  f"quality {s['quality']['metric']} {s['quality']['value']:.4f} "
                  f"(retention {s['quality']['retention']:.4f}), expected time reduction "
                  f"{s['expected_time_reduction']:.3f}, measured "
                  f"{s['time'].get('measured_time_reduction', 0):.3f}", "",
                  "| stream | depth mean +- sd | histogram (1..N layers) |", "|---|---|---|"]
        for stream, values in per_stream.items():
            tokens = ([l for r in rows for l in r["layers"]["decoder"]]
                      if stream == "decoder" else values)
            lines.append(f"| {stream} | {spread(values)} | {histogram(tokens, depth[stream])} |")
        lines.append("")
        for field in fields:
            groups: Dict[str, List[dict]] = collections.defaultdict(list)
            for r in rows:
                entry = manifest.get(r["line"])
                if entry is None:
                    raise SystemExit(f"{dump}: manifest has no line {r['line']} (sample {r['id']})")
                if field in entry:
                    groups[str(entry[field])].append(r)
            if not groups:
                continue
            quality = "accuracy" if task == "ve" else "same caption as full depth"
            lines += [f"| {field} | samples | image | text | decoder | {quality} |",
                      "|---|---|---|---|---|---|"]
            for value in sorted(groups, key=lambda v: (len(v), v)):
                g = groups[value]
                if task == "ve":
                    q = statistics.mean(1.0 if r["correct"] else 0.0 for r in g)
                else:
                    q = statistics.mean(1.0 if r["prediction"] == base_pred[r["id"]] else 0.0
                                        for r in g)
                dec = [statistics.mean(r["layers"]["decoder"]) for r in g if r["layers"]["decoder"]]
                lines.append(f"| {value} | {len(g)} | {spread([r['layers']['image'] for r in g])} "
                             f"| {spread([r['layers']['text'] for r in g])} | {spread(dec)} "
                             f"| {q:.3f} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="mue-bench --per-sample --json output")
    ap.add_argument("--setting", action="append", default=[], help="setting name (repeatable)")
    ap.add_argument("--by", default="num_objects,template,num_occluders,clutter",
                    help="comma-separated manifest fields to group by")
    args = ap.parse_args()
    try:
        with open(args.report) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{args.report}: {e}")
    print(analyse(report, args.setting, [f for f in args.by.split(",") if f]))


if __name__ == "__main__":
    sys.exit(main())
