#!/usr/bin/env bash
# dms.cpp against llama.cpp on the same GGUF file and thread count, side by side in one run:
# batch-1 decode (llama-bench tg128 against `dms bench` decode steps at a 128-token context) and
# prefill of 512 tokens (pp512 against `dms bench` prefill at context 512, one chunk). The two take
# turns for --rounds rounds so machine noise falls on both; prints every round, then the median and
# [min, max] of each and the ratio of the medians.
#
# llama.cpp is built outside the clone, in $DMS_CACHE/llama.cpp, from the sources vendored in the
# PyPI llama-cpp-python sdist; it never enters the repository or CI. Not run by the test suite.
#
# With --native, a second llama.cpp build with GGML_NATIVE=ON (this CPU's every extension, AMX
# included) takes its turn too, for decode only: its prefill crashed on a Xeon with AMX.
#
#   bench/vs-llama-cpp.sh [--rounds N] [--threads N] [--model GGUF] [--native]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
rounds=5 threads=2 model="$DMS_DEFAULT_MODEL" native=0
while (($#)); do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --native) native=1; shift ;;
    *) echo "usage: $0 [--rounds N] [--threads N] [--model GGUF] [--native]" >&2; exit 2 ;;
  esac
done

# The sdist's llama.cpp, built for this CPU's ISA but without GGML_NATIVE: with it, this build's
# AMX path crashed in prefill (llama-bench -p 16: segmentation fault) on a Xeon with AMX.
version=0.3.36
src="$DMS_CACHE/llama.cpp/llama_cpp_python-$version/vendor/llama.cpp"
bin="$src/build-bench/bin"
if [ ! -x "$bin/llama-bench" ]; then
  mkdir -p "$DMS_CACHE/llama.cpp"
  (cd "$DMS_CACHE/llama.cpp" &&
    "$DMS_VENV/bin/python" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d . &&
    tar xzf "llama_cpp_python-$version.tar.gz")
  cmake -S "$src" -B "$src/build-bench" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF >"$DMS_CACHE/llama.cpp/build.log" 2>&1
  cmake --build "$src/build-bench" -j"$(nproc)" --target llama-bench >>"$DMS_CACHE/llama.cpp/build.log" 2>&1
fi
native_bin="$src/build-native/bin"
if ((native)) && [ ! -x "$native_bin/llama-bench" ]; then
  cmake -S "$src" -B "$src/build-native" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF >>"$DMS_CACHE/llama.cpp/build.log" 2>&1
  cmake --build "$src/build-native" -j"$(nproc)" --target llama-bench >>"$DMS_CACHE/llama.cpp/build.log" 2>&1
fi
[ -x "$DMS_BUILD/dms" ] || scripts/setup >/dev/null

lscpu | grep -m1 'Model name'
echo "model $model, $threads threads, $rounds rounds; llama.cpp $version (sdist), $(git rev-parse --short HEAD) dms.cpp"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 1; r <= rounds; r++)); do
  "$bin/llama-bench" -m "$model" -t "$threads" -p 512 -n 128 -r 1 -o json 2>/dev/null >"$tmp/llama.$r.json"
  if ((native)); then
    "$native_bin/llama-bench" -m "$model" -t "$threads" -p 0 -n 128 -r 1 -o json 2>/dev/null >"$tmp/native.$r.json"
  fi
  "$DMS_BUILD/dms" bench --model "$model" --threads "$threads" --policies dense --contexts 128,512 --batches 1 \
    --steps 32 --repeats 1 --prefill-chunk 512 --prefill-max-context 512 --json "$tmp/dms.$r.json" >/dev/null 2>&1
done
"$DMS_VENV/bin/python" - "$tmp" "$rounds" <<'EOF'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
rows = {"decode tok/s (tg128 | context 128)": ([], []), "prefill tok/s (pp512 | context 512)": ([], [])}
for r in range(1, rounds + 1):
    for t in json.load(open(f"{tmp}/llama.{r}.json")):
        key = "decode tok/s (tg128 | context 128)" if t["n_gen"] else "prefill tok/s (pp512 | context 512)"
        rows[key][0].append(t["avg_ts"])
    d = json.load(open(f"{tmp}/dms.{r}.json"))
    dec = next(x for x in d["decode"] if x["context"] == 128)
    rows["decode tok/s (tg128 | context 128)"][1].append(dec["tokens_per_s"])
    pre = next(x for x in d["prefill"] if x["context"] == 512)
    rows["prefill tok/s (pp512 | context 512)"][1].append(pre["tokens_per_s_stats"]["median"])
fmt = lambda v: f"{statistics.median(v):8.1f} [{min(v):.1f}, {max(v):.1f}]"
print(f"{'':38} {'llama.cpp':>26} {'dms.cpp':>26} {'dms/llama':>9}")
for name, (llama, dms) in rows.items():
    print(f"{name:38} {fmt(llama):>26} {fmt(dms):>26} {statistics.median(dms) / statistics.median(llama):8.2f}x")
    print(f"{'  every round':38} {' '.join(f'{v:.0f}' for v in llama):>26} {' '.join(f'{v:.0f}' for v in dms):>26}")
import os
if os.path.exists(f"{tmp}/native.1.json"):
    native = [json.load(open(f"{tmp}/native.{r}.json"))[0]["avg_ts"] for r in range(1, rounds + 1)]
    dms = rows["decode tok/s (tg128 | context 128)"][1]
    print(f"{'decode tok/s, llama.cpp GGML_NATIVE':38} {fmt(native):>26} {fmt(dms):>26} "
          f"{statistics.median(dms) / statistics.median(native):8.2f}x")
    print(f"{'  every round':38} {' '.join(f'{v:.0f}' for v in native):>26}")
EOF
