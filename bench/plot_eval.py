"""Plots a `dms eval --json` report (schema dms-eval/1, docs/EVAL.md) as four PNG files:

  eval_kl_vs_cr.png          teacher-forced KL(dense || policy) and top-1 agreement against the
                             measured memory ratio, one line per policy over the DMS points
  eval_kl_by_context.png     teacher-forced KL per context bucket, each policy's bars side by
                             side, one row per DMS point
  eval_retrieval.png         retrieval accuracy heat maps (needle depth x context length), one
                             per policy (columns) and DMS point (rows)
  eval_layer_compression.png compression ratio and eviction fraction per layer, each policy's
                             bars side by side, one row per DMS point

    python bench/plot_eval.py report.json --out DIR

A separate step from `dms eval` so the plots can be redrawn from a saved report without
rerunning the evaluation, and the binary needs no Python.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLORS = {"dense": "#444444", "dms": "#d62728", "streaming": "#1f77b4", "h2o": "#2ca02c", "tova": "#9467bd"}
# KL is plotted on a log scale; an exact 0 (nothing evicted) sits at this floor.
KL_FLOOR = 1e-7


def color(policy):
    return COLORS.get(policy, "#7f7f7f")


def kl_vs_cr(report, path):
    series = {}
    for point in report["points"]:
        for e in point["teacher_forced"]:
            q = e["quality"]["overall"]
            series.setdefault(e["policy"], []).append((e["compression"]["memory_ratio"], q["kl"], q["top1"]))
    fig, (ax_kl, ax_top) = plt.subplots(1, 2, figsize=(12, 4.6))
    for policy, pts in series.items():
        pts.sort()
        cr = [p[0] for p in pts]
        ax_kl.plot(cr, [max(p[1], KL_FLOOR) for p in pts], "o-", color=color(policy), label=policy)
        ax_top.plot(cr, [100 * p[2] for p in pts], "o-", color=color(policy), label=policy)
    ax_kl.set_yscale("log")
    ax_kl.set_ylabel("mean KL(dense || policy), nats per token")
    ax_top.set_ylabel("top-1 agreement with dense, %")
    for ax in (ax_kl, ax_top):
        ax.set_xlabel("measured memory ratio (dense keys / keys held)")
        ax.grid(alpha=0.3)
        ax.legend()
    docs = report["documents"]
    fig.suptitle(f"{os.path.basename(report['model'])}: teacher-forced quality on {docs['count']} documents "
                 f"({max(docs['tokens'])} tokens), baselines at the DMS compression")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kl_by_context(report, path):
    points = report["points"]
    fig, axes = plt.subplots(len(points), 1, figsize=(9, 3.6 * len(points)), squeeze=False)
    for ax, point in zip(axes[:, 0], points):
        entries = point["teacher_forced"]
        buckets = [b["bucket"] for b in entries[0]["quality"]["buckets"]]
        width = 0.8 / len(entries)
        for i, e in enumerate(entries):
            kl = [b["kl"] for b in e["quality"]["buckets"]]
            x = [j + (i - (len(entries) - 1) / 2) * width for j in range(len(buckets))]
            label = f"{e['policy']} ({e['compression']['memory_ratio']:.2f}x)"
            ax.bar(x, kl, width, color=color(e["policy"]), label=label)
        ax.set_xticks(range(len(buckets)))
        ax.set_xticklabels([f"{b['bucket']}\n({b['tokens']} predictions)" for b in entries[0]["quality"]["buckets"]])
        ax.set_ylabel("mean KL(dense || policy), nats")
        ax.set_title(f"point {point['label']}: KL by context position, memory ratio in brackets")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def retrieval_heatmaps(report, path):
    items = report["retrieval_items"]
    lengths = sorted({it["length"] for it in items})
    depths = sorted({it["depth"] for it in items})
    rows = []
    for point in report["points"]:
        per_policy = {"dense": report["dense"]["retrieval"]}
        for e in point["retrieval"]:
            per_policy.setdefault(e["policy"], []).append(e)
        rows.append((point["label"], per_policy))
    policies = list(dict.fromkeys(p for _, pp in rows for p in pp))
    fig, axes = plt.subplots(len(rows), len(policies), figsize=(2.6 * len(policies) + 1, 2.4 * len(rows) + 0.8),
                             squeeze=False)
    image = None
    for r, (label, per_policy) in enumerate(rows):
        for c, policy in enumerate(policies):
            ax = axes[r][c]
            grid = [[float("nan")] * len(lengths) for _ in depths]
            for e in per_policy.get(policy, []):
                for d in e["by_depth"]:
                    grid[depths.index(d["depth"])][lengths.index(e["length"])] = 100 * d["accuracy"]
            image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis", aspect="auto", origin="upper")
            for i in range(len(depths)):
                for j in range(len(lengths)):
                    if grid[i][j] == grid[i][j]:
                        ax.text(j, i, f"{grid[i][j]:.0f}", ha="center", va="center", fontsize=8,
                                color="white" if grid[i][j] < 60 else "black")
            ax.set_xticks(range(len(lengths)), [str(x) for x in lengths], fontsize=8)
            ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=8)
            ax.set_title(f"{policy} ({label})" if policy != "dense" else "dense", fontsize=9)
            if c == 0:
                ax.set_ylabel("needle depth")
            if r == len(rows) - 1:
                ax.set_xlabel("context tokens")
    fig.colorbar(image, ax=axes, shrink=0.8, label="accuracy, %")
    fig.suptitle("passkey retrieval accuracy, baselines at the DMS compression of each length")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def layer_compression(report, path):
    points = report["points"]
    fig, axes = plt.subplots(len(points), 2, figsize=(13, 3.2 * len(points) + 0.6), squeeze=False)
    for r, point in enumerate(points):
        entries = point["teacher_forced"]
        width = 0.8 / max(1, len(entries))
        for k, e in enumerate(entries):
            per_layer = e["compression"]["per_layer"]
            xs = [i + (k - (len(entries) - 1) / 2) * width for i in range(len(per_layer["ratio"]))]
            axes[r][0].bar(xs, per_layer["ratio"], width, color=color(e["policy"]), label=e["policy"])
            axes[r][1].bar(xs, [100 * v for v in per_layer["eviction_fraction"]], width, color=color(e["policy"]),
                           label=e["policy"])
        axes[r][0].set_ylabel(f"{point['label']}\ncompression ratio")
        axes[r][1].set_ylabel("evicted, % of tokens seen")
        for ax in axes[r]:
            ax.set_xlabel("layer")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("compression per layer (mean over KV heads and documents, at each document's end)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="the JSON file `dms eval --json` wrote")
    parser.add_argument("--out", default=".", help="folder for the PNG files")
    args = parser.parse_args()
    with open(args.report) as f:
        report = json.load(f)
    if report.get("schema") != "dms-eval/1":
        raise SystemExit(f"{args.report}: not a dms-eval/1 report (schema {report.get('schema')!r})")
    os.makedirs(args.out, exist_ok=True)
    kl_vs_cr(report, os.path.join(args.out, "eval_kl_vs_cr.png"))
    kl_by_context(report, os.path.join(args.out, "eval_kl_by_context.png"))
    if report["retrieval_items"]:
        retrieval_heatmaps(report, os.path.join(args.out, "eval_retrieval.png"))
    layer_compression(report, os.path.join(args.out, "eval_layer_compression.png"))
    for name in sorted(os.listdir(args.out)):
        if name.startswith("eval_") and name.endswith(".png"):
            print(os.path.join(args.out, name))


if __name__ == "__main__":
    main()
