"""Plots a `dms retrofit` log (DIR/log.jsonl): the losses per step, and the eviction fraction of
the student's hard decisions against the schedule's target, with the held-out evaluations.

    python bench/plot_retrofit.py DIR/log.jsonl retrofit.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(log_path, png_path):
    with open(log_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in records if r["type"] == "step"]
    evals = [r for r in records if r["type"] == "eval"]
    if not steps:
        sys.exit(f"{log_path}: no step records")
    x = [r["step"] for r in steps]
    fig, (ax_l, ax_f) = plt.subplots(1, 2, figsize=(11, 4))
    ax_l.plot(x, [r["distill"] for r in steps], lw=0.8, label="distillation KL (train)")
    ax_l.plot(x, [r["compress"] for r in steps], lw=0.8, label="compression loss")
    if evals:
        ax_l.plot([r["step"] for r in evals], [r["heldout_kl"] for r in evals], "o-", label="held-out KL")
    ax_l.set_xlabel("step")
    ax_l.set_ylabel("nats per token (log scale; zeros not drawn)")
    ax_l.set_yscale("log")  # the losses span 1e-4 to a few nats; a linear axis shows only the spikes
    ax_l.set_title("losses")
    ax_l.legend()
    ax_f.plot(x, [r["frac"] for r in steps], lw=0.8, label="eviction fraction (train)")
    ax_f.plot(x, [r["target_frac"] for r in steps], "k--", lw=1, label="target: 1 - 1/CR(step)")
    if evals:
        ax_f.plot([r["step"] for r in evals], [r["heldout_frac"] for r in evals], "o-", label="held-out")
    ax_f.set_xlabel("step")
    ax_f.set_ylim(0, 1)
    ax_f.set_title("eviction fraction")
    ax_f.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
