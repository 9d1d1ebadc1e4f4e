"""Plots bench/serve_load.py reports (schema dms-serve-load/1) against concurrency, one line per
server: TPOT p50 (p90 dashed; log scale, as one prefill stalls every stream), output tokens/s,
the peak of requests running at once (solid: the server's running gauge, a cross where the level
was not sustained, see serve_load.py; dotted: streams between first token and end, seen by the
client; the diagonal is "all C at once"; lines shifted a little sideways so equal ones show),
and the peak KV cache bytes held (dms serve's dms_kv_bytes_held, its cache size dotted;
llama-server's up-front allocation, dashed, where the report has it).

    python bench/plot_serve.py bench/serve/*.json --out bench/serve/serve.png
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def series(doc, key, sub=None, scale=1.0):
    pts = []
    for lv in doc["levels"]:
        v = lv.get(key)
        if sub is not None and v is not None:
            v = v.get(sub)
        if v is not None:
            pts.append((lv["concurrency"], v * scale))
    return [p[0] for p in pts], [p[1] for p in pts]


def kv_budget(doc):
    """The cache's size, from a poll that saw bytes held and blocks used together."""
    for lv in doc["levels"]:
        cols = lv.get("metric_series", {}).get("columns", [])
        if not {"kv_bytes_held", "kv_blocks_used", "kv_blocks_total"} <= set(cols):
            continue
        held, used, total = (cols.index(k) for k in ("kv_bytes_held", "kv_blocks_used", "kv_blocks_total"))
        for row in lv["metric_series"]["rows"]:
            if row[held] and row[used] and row[total]:
                return row[held] / row[used] * row[total]
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    docs = []
    for path in args.reports:
        with open(path) as f:
            doc = json.load(f)
        if doc.get("schema") != "dms-serve-load/1":
            raise SystemExit(f"{path}: not a dms-serve-load/1 file (schema {doc.get('schema')!r})")
        docs.append(doc)

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    ax_tpot, ax_tps, ax_run, ax_kv = axes
    colors = plt.cm.tab10.colors
    max_c = max(lv["concurrency"] for d in docs for lv in d["levels"])
    for i, doc in enumerate(docs):
        color, label = colors[i % 10], doc["label"]
        x, y = series(doc, "tpot_s", "p50", 1e3)
        ax_tpot.plot(x, y, "o-", color=color, label=label)
        x, y = series(doc, "tpot_s", "p90", 1e3)
        ax_tpot.plot(x, y, "--", color=color, alpha=0.4)
        ax_tps.plot(*series(doc, "output_tokens_per_s"), "o-", color=color, label=label)
        shift = 1 + 0.04 * (i - (len(docs) - 1) / 2)
        x, y = series(doc, "peak_running")
        if x:
            ax_run.plot([c * shift for c in x], y, "o-", color=color, label=label + " running")
            bad = [(lv["concurrency"] * shift, lv["peak_running"]) for lv in doc["levels"]
                   if not lv.get("sustained") and lv.get("peak_running") is not None]
            if bad:
                ax_run.plot(*zip(*bad), "x", color=color, ms=12, mew=2.5, zorder=10)
        x, y = series(doc, "client_peak_streaming")
        ax_run.plot([c * shift for c in x], y, "s:", color=color, label=label + " streaming")
        x, y = series(doc, "peak_kv_bytes_held", scale=1 / 2**20)
        if x:
            ax_kv.plot(x, y, "o-", color=color, label=label + " held")
        budget = kv_budget(doc)
        if budget:
            ax_kv.axhline(budget / 2**20, ls=":", color=color, label=label + " budget")
        if doc.get("static_kv_bytes"):
            ax_kv.axhline(doc["static_kv_bytes"] / 2**20, ls="--", color=color, label=label + " allocated")
    ax_run.plot([1, max_c], [1, max_c], color="gray", lw=0.8, alpha=0.5)
    if not ax_kv.lines:
        ax_kv.text(0.5, 0.5, "no KV gauge in these reports", ha="center", transform=ax_kv.transAxes)
    ax_tpot.set_yscale("log")
    ax_tpot.set_title("TPOT p50 (p90 dashed)")
    ax_tpot.set_ylabel("ms per output token")
    ax_tps.set_title("output tokens/s (all streams)")
    ax_tps.set_ylabel("tokens/s")
    ax_run.set_title("peak requests running at once (x: not sustained)")
    ax_run.set_ylabel("requests")
    ax_kv.set_title("peak KV cache bytes")
    ax_kv.set_ylabel("MiB")
    levels = sorted({lv["concurrency"] for d in docs for lv in d["levels"]})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.minorticks_off()
        ax.set_xlim(levels[0] / 1.25, levels[-1] * 1.25)
        if ax is not ax_tpot:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    s = docs[0]["settings"]
    lo, hi = s["prompt_tokens"]
    fig.suptitle(f"{docs[0]['cpu']}: {s['endpoint']}, prompts {lo}-{hi} tokens, max_tokens {s['max_tokens']}, "
                 f"temperature {s['temperature']}{', ignore_eos' if s['ignore_eos'] else ''}")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
