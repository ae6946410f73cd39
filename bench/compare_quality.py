#!/usr/bin/python3
"""Quality under each compute type (issue 17, item 3), from mue-bench reports run with
--per-sample and settings that differ only in their compute type, e.g.

    mue-bench --dump ve-test --sweep compute=bf16,int8 --setting calibrated=POLICY.json \\
      --setting calibrated_bf16=POLICY.json,compute:bf16 \\
      --setting calibrated_int8=POLICY.json,compute:int8 --per-sample --json ve-types.json
    bench/compare_quality.py ve-types.json [cap-types.json ...]

Each setting is compared with the f32 setting of the same exit policy: its quality metric
(accuracy in points, CIDEr-D in percent of f32's; both shown x100, as mue-bench's table), the share of samples whose prediction differs
and the share whose exit layers differ (image, text, or the decoder at any step both generated),
against the targets:
bf16 within 0.5 points of accuracy and 1% of CIDEr-D, int8 within 1 point and 2%.
"""

import json
import sys

TARGETS = {"bf16": {"accuracy": 0.5, "cider_d": 1.0}, "int8": {"accuracy": 1.0, "cider_d": 2.0}}


def exits_differ(a: dict, b: dict) -> bool:
    """Whether any exit decision differs: the encoder streams' layers, or the decoder's at a step
    both generated (a caption that ends earlier or later is counted by the predictions)."""
    steps = min(len(a["decoder"]), len(b["decoder"]))
    return (a["image"] != b["image"] or a["text"] != b["text"]
            or a["decoder"][:steps] != b["decoder"][:steps])


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        with open(path) as f:
            report = json.load(f)
        metric = report["quality_metric"]
        settings = report["settings"]
        missing = [s["name"] for s in settings if "per_sample" not in s]
        if missing:
            sys.exit(f"{path}: settings {missing} have no per-sample results (run with --per-sample)")
        f32 = {json.dumps(s["policy"], sort_keys=True): s for s in settings
               if s["compute_type"] == "f32"}
        print(f"{path}: {report['task']}, {settings[0]['samples']} samples, metric {metric}")
        print(f"  {'setting':18} {'type':5} {metric:>9} {'f32':>9} {'delta':>9} {'target':>8} "
              f"{'met':>4} {'pred. differ':>12} {'exits differ':>12}")
        for s in settings:
            base = f32.get(json.dumps(s["policy"], sort_keys=True))
            if base is None or s is base:
                continue
            value, ref = s["quality"]["value"], base["quality"]["value"]
            if metric == "accuracy":
                delta, unit = 100 * (value - ref), "pt"
            else:
                delta, unit = (100 * (value / ref - 1) if ref else float("nan")), "%"
            target = TARGETS.get(s["compute_type"], {}).get(metric)
            met = "-" if target is None else ("yes" if delta >= -target else "no")
            a = {r["id"]: r for r in base["per_sample"]}
            b = {r["id"]: r for r in s["per_sample"]}
            ids = [i for i in a if i in b]
            pred = sum(a[i]["prediction"] != b[i]["prediction"] for i in ids) / len(ids)
            exits = sum(exits_differ(a[i]["layers"], b[i]["layers"]) for i in ids) / len(ids)
            print(f"  {s['name']:18} {s['compute_type']:5} {100 * value:9.2f} {100 * ref:9.2f} "
                  f"{delta:+8.2f}{unit:1} {('-' if target is None else f'{target}{unit}'):>8} "
                  f"{met:>4} {100 * pred:11.1f}% {100 * exits:11.1f}%")


if __name__ == "__main__":
    main()
