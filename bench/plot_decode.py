"""Plots `dms bench --json` output: decode step time and KV memory against context, one line
per (policy, batch).

    python bench/plot_decode.py bench/decode-f32.json bench/decode-f32.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src, dst):
    with open(src) as f:
        doc = json.load(f)
    rows = doc["measurements"]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    colors = plt.cm.viridis([i / max(1, len(batches) - 1) * 0.85 for i in range(len(batches))])
    styles = ["-", "--", ":", "-."]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    for pi, policy in enumerate(policies):
        for bi, batch in enumerate(batches):
            pts = sorted((r for r in rows if r["policy"] == policy and r["batch"] == batch), key=lambda r: r["context"])
            if not pts:
                continue
            ctx = [r["context"] for r in pts]
            med = [r["step_ms_median"] for r in pts]
            lo = [m - min(r["step_ms"]) for m, r in zip(med, pts)]
            hi = [max(r["step_ms"]) - m for m, r in zip(med, pts)]
            label = f"{policy}, batch {batch}"
            ax_t.errorbar(ctx, med, yerr=[lo, hi], ls=styles[pi % 4], color=colors[bi], marker="o", ms=3,
                          capsize=2, label=label)
            ax_m.plot(ctx, [r["kv_bytes"] / 2**20 for r in pts], ls=styles[pi % 4], color=colors[bi], marker="o",
                      ms=3, label=label)
    for ax, title, unit in [(ax_t, "decode step time (median, min-max)", "ms per step"),
                            (ax_m, "KV cache memory held", "MiB")]:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens per sequence)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_m.legend(fontsize=7, ncol=2)
    window = doc.get("dms_window")
    evict = doc.get("force_evict")
    fig.suptitle(f"{doc['model'].split('/')[-1]}: dms (window {window}, forced eviction {evict}) vs dense, "
                 f"KV {doc['kv_dtype']}, {doc['threads']} threads")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
