#!/usr/bin/env python3
"""PNG plot of quality against time from a mue-bench JSON report (mue-bench writes an SVG itself;
this is the same scatter through matplotlib, for slides and READMEs).

    python3 tools/plot_bench.py report.json --out plot.png [--x reduction|ms|expected]

x: measured wall-clock reduction against full depth (default), mean ms per sample, or spec 1.6's
expected (layer-count) reduction. y: the report's quality metric (x100). A mue-calibrate report
(--json) is accepted too: its dev and test settings are plotted.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LABELS = {"accuracy": "accuracy (%)", "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3",
          "bleu4": "BLEU-4", "cider_d": "CIDEr-D", "rouge_l": "ROUGE-L"}


def settings_of(report):
    """(group name, settings) pairs: one group for mue-bench, dev and test for mue-calibrate."""
    if "settings" in report:
        return [("", report["settings"])]
    groups = [(name, report[name]["settings"]) for name in ("dev", "test") if name in report]
    if not groups:
        raise ValueError("not a mue-bench or mue-calibrate report (no \"settings\")")
    return groups


def x_of(setting, axis):
    if axis == "ms":
        return setting["time"]["mean_ms"]
    if axis == "expected":
        return 100 * setting["expected_time_reduction"]
    return 100 * setting["time"]["measured_time_reduction"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="mue-bench --json output (or mue-calibrate --json)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--x", choices=("reduction", "ms", "expected"), default="reduction")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    try:
        with open(args.report, encoding="utf-8") as f:
            report = json.load(f)
        groups = settings_of(report)
        metric = report["quality_metric"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_bench: {args.report}: {e}", file=sys.stderr)
        return 2

    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    for marker, (group, settings) in zip("os^", groups):
        for s in settings:
            if "mean_ms" not in s.get("time", {}):
                continue
            x, y = x_of(s, args.x), 100 * s["metrics"][metric]
            colour = "tab:red" if s.get("is_baseline") else "tab:blue"
            ax.scatter([x], [y], color=colour, marker=marker, zorder=3)
            name = f"{group}: {s['name']}" if group else s["name"]
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8,
                        color=colour)
    ax.set_xlabel({"ms": "wall clock per sample (ms, mean)",
                   "expected": "expected time reduction, spec 1.6 (%)",
                   "reduction": "measured wall-clock reduction against full depth (%)"}[args.x])
    ax.set_ylabel(LABELS.get(metric, metric) + ("" if metric == "accuracy" else " (x100)"))
    model = report.get("model", {}).get("name", "")
    ax.set_title(args.title or f"{report.get('tool', 'mue-bench')}: {model}, "
                 f"batch {report.get('batch_size', '?')}")
    ax.grid(True, color="#e4e4e4")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"plot_bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
