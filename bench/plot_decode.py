"""Plots `dms bench --json` output (schema dms-bench/1, docs/BENCH.md) against context, one line
per (policy, batch): decode tokens/s (median, min-max bars) with the roofline of each setting
dotted, KV memory held, and prefill tokens/s.

    python bench/plot_decode.py bench/decode.json bench/decode.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLES = ["-", "--", "-.", ":"]


def decode_panels(doc, ax_t, ax_m):
    rows = doc["decode"]
    policies = doc["policies"]
    batches = sorted({r["batch"] for r in rows})
    colors = plt.cm.viridis([i / max(1, len(batches) - 1) * 0.85 for i in range(len(batches))])
    for pi, policy in enumerate(policies):
        for bi, batch in enumerate(batches):
            pts = sorted((r for r in rows if r["policy"] == policy and r["batch"] == batch), key=lambda r: r["context"])
            if not pts:
                continue
            ctx = [r["context"] for r in pts]
            # tokens/s from the median step and from the slowest and fastest steps.
            tps = [r["tokens_per_s"] for r in pts]
            lo = [t - 1e3 * r["batch"] / r["step_ms_stats"]["max"] for t, r in zip(tps, pts)]
            hi = [1e3 * r["batch"] / r["step_ms_stats"]["min"] - t for t, r in zip(tps, pts)]
            label = f"{policy}, batch {batch}"
            ax_t.errorbar(ctx, tps, yerr=[lo, hi], ls=STYLES[pi % 4], color=colors[bi], marker="o", ms=3, capsize=2,
                          label=label)
            ax_t.plot(ctx, [1e3 * r["batch"] / r["roofline_ms"] for r in pts], ls=STYLES[pi % 4], color=colors[bi],
                      lw=0.8, alpha=0.45)
            ax_m.plot(ctx, [r["kv_bytes"] / 2**20 for r in pts], ls=STYLES[pi % 4], color=colors[bi], marker="o", ms=3,
                      label=label)
    ax_t.set_title("decode tokens/s (median, min-max); faint: roofline")
    ax_t.set_ylabel("tokens/s (all sequences)")
    ax_m.set_title("KV cache memory held")
    ax_m.set_ylabel("MiB")
    ax_m.legend(fontsize=7, ncol=2)


def prefill_panel(doc, ax):
    rows = doc["prefill"]
    for pi, policy in enumerate(doc["policies"]):
        pts = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["context"])
        if not pts:
            continue
        stats = [r["tokens_per_s_stats"] for r in pts]
        med = [s["median"] for s in stats]
        ax.errorbar([r["context"] for r in pts], med, yerr=[[m - s["min"] for m, s in zip(med, stats)],
                                                            [s["max"] - m for m, s in zip(med, stats)]],
                    ls=STYLES[pi % 4], marker="o", ms=3, capsize=2, label=policy)
    chunk = rows[0]["chunk"] if rows else "-"
    ax.set_title(f"prefill tokens/s (one sequence, chunks of {chunk})")
    ax.set_ylabel("tokens/s")
    ax.legend(fontsize=7)


def main(src, dst):
    with open(src) as f:
        doc = json.load(f)
    if doc.get("schema") != "dms-bench/1":
        raise SystemExit(f"{src}: not a dms-bench/1 file (schema {doc.get('schema')!r})")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    decode_panels(doc, axes[0], axes[1])
    prefill_panel(doc, axes[2])
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens per sequence)")
        ax.grid(True, which="both", alpha=0.3)
    bw = doc["machine"]["read_bandwidth_bytes_per_s"] / 1e9
    evict = doc.get("force_evict")
    fig.suptitle(f"{doc['model'].split('/')[-1]}: {', '.join(doc['policies'])} (DMS window {doc['dms_window']}"
                 f"{f', forced eviction {evict}' if evict is not None else ''}), KV {doc['kv_dtype']}, "
                 f"{doc['threads']} threads, read bandwidth {bw:.1f} GB/s")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
