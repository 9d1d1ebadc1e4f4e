#!/usr/bin/env bash
# Retrofit step time against row length, the blockwise training attention against the dense
# T x T one, side by side: for each --seq-len, `dms retrofit` runs --steps optimizer steps of one
# row on the default model (fresh decision heads, or --adapter's) with each --blocks length as
# --attention-block (default 256 and 0, the dense path), taking turns; prints the
# median seconds of the steps after the first, tokens/s, the cost per token relative to rows of
# 512 and the peak resident memory. A dense run that fails (out of memory) is reported as such.
# Training text: the project's own documentation. Not run by the test suite.
#
#   bench/retrofit-rows.sh [--lengths "512 1024 2048 4096"] [--blocks "256 0"] [--steps 3] [--threads 2]
#                          [--dtype f32] [--adapter PATH]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
lengths="512 1024 2048 4096" blocks="256 0" steps=3 threads=2 dtype=f32 adapter=()
while (($#)); do
  case "$1" in
    --lengths) lengths=$2; shift 2 ;;
    --blocks) blocks=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --dtype) dtype=$2; shift 2 ;;
    --adapter) adapter=(--dms-adapter "$(realpath "$2")"); shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: $0 [--lengths LIST] [--blocks LIST] [--steps N] [--threads N] [--dtype f32|bf16] [--adapter PATH]" >&2; exit 2 ;;
  esac
done
[ -x "$DMS_BUILD/dms" ] || scripts/setup >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/data"
cp README.md docs/*.md "$tmp/data/"
cp bench/RESULTS.md "$tmp/data/bench-results.md"
lscpu | grep -m1 'Model name'
echo "default model${adapter:+ with ${adapter[1]}}, $dtype, $threads threads, $steps steps per run, $DMS_BUILD/dms, tree at $(git rev-parse --short HEAD)"
printf '%8s %8s %10s %10s %12s %10s\n' "seq_len" "block" "s/step" "tok/s" "per token" "peak RSS"
base=""
for T in $lengths; do
  for block in $blocks; do
    out="$tmp/run-$T-$block"
    if /usr/bin/time -f '%M' -o "$tmp/rss" "$DMS_BUILD/dms" retrofit --data "$tmp/data" --out "$out" --steps "$steps" \
        --seq-len "$T" --attention-block "$block" --threads "$threads" --dtype "$dtype" "${adapter[@]}" --eval-rows 1 \
        --checkpoint-every 1000 \
        >"$tmp/log" 2>&1; then
      "$DMS_VENV/bin/python" - "$out/log.jsonl" "$T" "$block" "$(cat "$tmp/rss")" "${base:-0}" "$tmp/per_token" <<'PY'
import json, statistics, sys
path, T, block, rss_kib, base, per_token_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
secs = [r["seconds"] for r in map(json.loads, open(path)) if r.get("type") == "step"][1:]
s = statistics.median(secs)
per_token = s / T
rel = f"{per_token / base:.2f}x" if base else "1.00x"
print(f"{T:8d} {block:>8} {s:10.1f} {T / s:10.1f} {rel:>12} {rss_kib / 1024:8.0f} MiB")
open(per_token_file, "w").write(f"{per_token}\n")
PY
    else
      # /usr/bin/time writes "Command terminated by signal 9" first when the run was killed (OOM).
      printf '%8s %8s %s\n' "$T" "$block" "failed: $(grep -m1 -h 'terminated' "$tmp/rss" || tail -1 "$tmp/log")"
    fi
    # The first row length's first block length is the per-token reference.
    if [ -z "$base" ] && [ -f "$tmp/per_token" ]; then base=$(cat "$tmp/per_token"); fi
  done
done
