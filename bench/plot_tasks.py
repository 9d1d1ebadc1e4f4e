"""Plots a `dms solve --json` report (docs/EVAL.md) as tasks_accuracy_vs_memory.png: majority-vote
accuracy against the mean peak KV memory per problem (left) and against the KV bytes read per
problem (right), one colour per policy. Every (k, max tokens) point is drawn; the line joins each
policy's best accuracy within each memory level (its frontier), and the bars are 95% Wilson
intervals.

    python bench/plot_tasks.py report.json --out DIR
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

COLORS = {"dense": "#444444", "dms": "#d62728", "streaming": "#1f77b4", "h2o": "#2ca02c", "tova": "#9467bd"}
MIB = 1024.0 * 1024.0


def frontier(points, key):
    """The points that no point of less or equal memory beats, by memory."""
    out, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[key], -p["accuracy"])):
        if p["accuracy"] > best:
            out.append(p)
            best = p["accuracy"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report")
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    with open(a.report, encoding="utf-8") as f:
        report = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], "mean_peak_kv_bytes", "peak KV per problem (MiB)"),
                           (axes[1], "mean_kv_read_bytes", "KV read per problem (MiB)")):
        for policy in report["policies"]:
            pts = policy["points"]
            c = COLORS.get(policy["name"], "#7f7f7f")
            xs = [p[key] / MIB for p in pts]
            ys = [100 * p["accuracy"] for p in pts]
            err = [[max(0, 100 * (p["accuracy"] - p["ci95"][0])) for p in pts],
                   [max(0, 100 * (p["ci95"][1] - p["accuracy"])) for p in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=c, alpha=0.35, markersize=4, capsize=2)
            front = frontier(pts, key)
            name = policy["name"] + (f" ({policy['memory_ratio']:.2f}x less KV)" if policy["name"] != "dense" else "")
            ax.plot([p[key] / MIB for p in front], [100 * p["accuracy"] for p in front], "-o", color=c, label=name)
            for p in front:
                ax.annotate(f"k{p['k']}/{p['max_tokens']}", (p[key] / MIB, 100 * p["accuracy"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3), color=c)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("majority-vote accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{report['tasks']}: {report['problems']} problems")
    fig.tight_layout()
    path = os.path.join(a.out, "tasks_accuracy_vs_memory.png")
    fig.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    main()
