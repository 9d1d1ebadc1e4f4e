#!/usr/bin/env python3
"""Where a decode step's CPU time goes, from a `perf record` of `dms generate`: the weight matmuls,
the attention kernels, threads (OpenMP's or the kernels' team's: starting regions, waiting in or
between them) and everything
else (op dispatch, allocations, copies, bookkeeping, sampling), per thread and for the whole
process, by the function each sample was taken in (weighted by the sample's period). Not a test (bench/RESULTS.md, "Per-step
overhead").

    perf record -F 2000 -g -o step.data build/dms generate --temperature 0 --no-dms-adapter \\
        --ignore-eos --max-tokens 1500 --threads T "The quick brown fox"
    python bench/perf_step.py step.data [--top N]

The samples of loading the model (a few tenths of a second of a 1,500-token run) count as
"other" too, unless --after skips the first seconds of the recording.
"""
import argparse
import collections
import re
import subprocess

MATMUL = re.compile(r"Packed32|decode_matmul|packed_decode|quantize_acts|IntRowKernel|RowKernel|batched_matmul|"
                    r"dequant_blocks|DotHalf")
ATTENTION = re.compile(r"attn::|paged_attention|run_units|Kernel<|scores_|fold_")
TEAM = re.compile(r"dms::cpu::team_run|dms::cpu::\(anonymous namespace\)::Team::")


def category(sym, dso):
    if TEAM.search(sym):
        return "threads"
    if dso.endswith("/dms") or dso == "dms":
        if MATMUL.search(sym):
            return "matmul"
        if ATTENTION.search(sym):
            return "attention"
    if "libgomp" in dso:
        return "threads"
    if "libtorch" in dso and re.search(r"gemm|sgemm|mkl|dnnl", sym):
        return "matmul"  # the batched path's at::mm
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--top", type=int, default=0, help="also list each thread's N costliest other/threads functions")
    ap.add_argument("--after", type=float, default=0.0,
                    help="skip the samples of the recording's first SECONDS (loading the model, the prefill)")
    args = ap.parse_args()
    out = subprocess.run(["perf", "script", "-i", args.data, "-F", "tid,time,period,ip,sym,dso"], capture_output=True,
                         text=True, check=True).stdout
    per_thread = collections.defaultdict(collections.Counter)
    functions = collections.defaultdict(collections.Counter)
    tid, period, want_frame, start = None, 0, False, None
    for line in out.splitlines():
        header = re.match(r"\s*(\d+)\s+([0-9.]+):\s+(\d+)\s*$", line)
        if header:  # a sample (thread, time, period in cycles): its first frame follows
            tid, when, period = int(header.group(1)), float(header.group(2)), int(header.group(3))
            start = when if start is None else start
            want_frame = when - start >= args.after
            continue
        frame = re.match(r"\s*[0-9a-f]+\s+(.*)\((.*)\)\s*$", line)
        if not frame or not want_frame:
            continue
        want_frame = False
        sym, dso = frame.group(1).strip(), frame.group(2)
        c = category(sym, dso)
        per_thread[tid][c] += period
        if c in ("other", "threads"):
            functions[tid][(c, dso.rsplit("/", 1)[-1], sym[:90])] += period
    total = collections.Counter()
    for t in sorted(per_thread, key=lambda t: -sum(per_thread[t].values())):
        counts = per_thread[t]
        total.update(counts)
        n = sum(counts.values())
        print(f"thread {t}: {n / 1e9:.1f} G cycles  " + "  ".join(f"{c} {100 * v / n:.1f}%" for c, v in counts.most_common()))
        for (c, dso, sym), v in functions[t].most_common(args.top):
            print(f"    {100 * v / n:5.2f}% {c:5s} {dso:20s} {sym}")
    n = sum(total.values())
    print(f"all threads: {n / 1e9:.1f} G cycles  " + "  ".join(f"{c} {100 * v / n:.1f}%" for c, v in total.most_common()))


if __name__ == "__main__":
    main()
