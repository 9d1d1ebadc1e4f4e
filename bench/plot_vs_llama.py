"""Bar chart of the decode and prefill comparison against llama.cpp recorded in bench/RESULTS.md
("16-bit activations in the decode kernels"): tokens/s per engine and setting, the values given
in bench/weights/vs-llama.json (medians of the runs there, with their commands).

    python bench/plot_vs_llama.py bench/weights/vs-llama.json bench/weights/vs-llama.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(src, out):
    doc = json.load(open(src))
    panels = doc["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    for ax, panel in zip(axes, panels):
        names = [b["name"] for b in panel["bars"]]
        values = [b["tok_s"] for b in panel["bars"]]
        colors = ["tab:gray" if b["engine"] == "llama.cpp" else "tab:blue" for b in panel["bars"]]
        ax.bar(range(len(values)), values, color=colors)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(values)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel("tokens/s")
    fig.suptitle(doc["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
