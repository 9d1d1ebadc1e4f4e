#!/usr/bin/env bash
# `dms serve` under load, DMS against dense at the same KV budget, and llama-server beside them:
# starts each server in turn on loopback, waits for GET /health, runs bench/serve_load.py with the
# same sweep (closed loop, C clients streaming long-prompt completions at each concurrency level C)
# against it, stops it (SIGTERM), and plots the reports with bench/plot_serve.py:
#
#   dms     build/dms serve --policy dms   --kv-budget B   (the default model's shipped DMS adapter)
#   dense   build/dms serve --policy dense --kv-budget B
#   llama   llama-server -np <most clients> -c <slots x (longest prompt + max tokens)> --metrics
#
# What it shows: at one KV budget, how many streams each policy runs at once (the rest wait for
# cache; serve_load.py's "max concurrent streams sustained"), and what that does to TPOT and
# tokens/s. llama-server allocates its whole KV cache up front, so it runs every stream; its
# allocation (computed from the GGUF) is drawn beside dms serve's peak bytes held.
#
# Writes <out>/<server>.json (serve_load.py reports), <out>/serve.png and, per server,
# <out>/<server>.log (its stderr). The default sweep took 18 minutes on 2 idle cores (llama-server
# 8.5, dms serve 9 for both policies), most of it prefill of the 92K prompt tokens per server.
#
# llama-server is built outside the clone, in $DMS_CACHE/llama.cpp, from the llama-cpp-python
# sdist, in the same build directory as bench/vs-llama-cpp.sh's llama-bench; it never enters the
# repository or CI. Not run by the test suite.
#
#   bench/serve-vs.sh [--servers dms,dense,llama] [--kv-budget 192MiB] [--concurrency 1,2,4,8]
#       [--prompt-tokens 2048:4096] [--max-tokens 64] [--requests-per-client 2] [--threads 2]
#       [--model GGUF] [--out DIR] [--dms-args "..."] [--dms-only-args "..."] [--llama-args "..."]
#       [-- serve_load.py args]
#
# --dms-args go to both dms serve runs (e.g. "--kv-dtype f16"), --dms-only-args to the dms policy
# run alone (e.g. "--force-evict 0.875"), --llama-args to llama-server.
#
# e.g. a quick check against llama-server alone:
#   bench/serve-vs.sh --servers llama --concurrency 1,2 --prompt-tokens 2048 --max-tokens 32
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
servers=dms,dense,llama kv_budget=192MiB concurrency=1,2,4,8 prompt_tokens=2048:4096 max_tokens=64
per_client=2 threads=2 model="$DMS_DEFAULT_MODEL" out=bench/serve dms_args="" dms_only_args="" llama_args=""
load_args=()
usage="usage: $0 [--servers dms,dense,llama] [--kv-budget BYTES] [--concurrency C1,C2,..] [--prompt-tokens MIN:MAX]
  [--max-tokens N] [--requests-per-client N] [--threads N] [--model GGUF] [--out DIR] [--dms-args ARGS]
  [--dms-only-args ARGS] [--llama-args ARGS] [-- serve_load.py args]"
while (($#)); do
  case "$1" in
    --servers) servers=$2; shift 2 ;;
    --kv-budget) kv_budget=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --prompt-tokens) prompt_tokens=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --requests-per-client) per_client=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --dms-args) dms_args=$2; shift 2 ;;
    --dms-only-args) dms_only_args=$2; shift 2 ;;
    --llama-args) llama_args=$2; shift 2 ;;
    --) shift; load_args=("$@"); break ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
py="$DMS_VENV/bin/python"
[ -f "$DMS_VENV/.complete" ] || scripts/setup >/dev/null

# The sdist's llama.cpp with the flags of bench/vs-llama-cpp.sh (GGML_NATIVE off: its AMX path
# crashed), plus the server; LLAMA_USE_PREBUILT_UI=OFF keeps the build from fetching the web UI.
version=0.3.36
src="$DMS_CACHE/llama.cpp/llama_cpp_python-$version/vendor/llama.cpp"
llama_server="$src/build-bench/bin/llama-server"
build_llama_server() {
  if [ ! -d "$src" ]; then
    mkdir -p "$DMS_CACHE/llama.cpp"
    (cd "$DMS_CACHE/llama.cpp" &&
      "$py" -m pip download -q --no-binary :all: --no-deps "llama-cpp-python==$version" -d . &&
      tar xzf "llama_cpp_python-$version.tar.gz")
  fi
  echo "building llama-server in $src/build-bench (log: $DMS_CACHE/llama.cpp/build.log)"
  cmake -S "$src" -B "$src/build-bench" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
    -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DLLAMA_CURL=OFF \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    >"$DMS_CACHE/llama.cpp/build.log" 2>&1
  # Two jobs: the machine this was written on has two cores and other work on them.
  cmake --build "$src/build-bench" -j2 --target llama-server >>"$DMS_CACHE/llama.cpp/build.log" 2>&1
}
if [[ ",$servers," == *,llama,* ]] && [ ! -x "$llama_server" ]; then build_llama_server; fi
if [[ ",$servers," == *,dms,* || ",$servers," == *,dense,* ]]; then
  [ -x "$DMS_BUILD/dms" ] || scripts/setup >/dev/null
  "$DMS_BUILD/dms" serve --help >/dev/null 2>&1 ||
    { echo "$DMS_BUILD/dms has no serve command; run with --servers llama" >&2; exit 1; }
fi

# llama-server: one slot per client of the largest level, each with room for the longest prompt
# and the reply plus 10% (prompts are sized by a tokens-per-word estimate), in multiples of 256.
max_c=$(tr , '\n' <<<"$concurrency" | sort -n | tail -1)
slot_ctx=$(((((${prompt_tokens#*:} + max_tokens) * 11 / 10 + 255) / 256) * 256))
mkdir -p "$out"
lscpu | grep -m1 'Model name'
# ggml's and OpenMP's thread pools spin at barriers: a compile beside them made llama-server's
# decode 10x slower here (213 against 23 ms per token), so say when the machine is not idle.
load=$(cut -d' ' -f1 /proc/loadavg)
awk -v l="$load" 'BEGIN { exit !(l > 0.5) }' &&
  echo "warning: load average $load before starting; other work on these cores skews every number" >&2
echo "model $model, $threads threads, KV budget $kv_budget, concurrency $concurrency, prompts $prompt_tokens tokens," \
  "max_tokens $max_tokens; $(git rev-parse --short HEAD) dms.cpp, llama.cpp $version (sdist)"

pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true' EXIT
reports=()
for server in ${servers//,/ }; do
  # A fresh free port each time: the last server's may still be in TIME_WAIT.
  port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The default model runs with its shipped adapter under dms; naming --model turns that off.
  adapter=()
  [ "$model" = "$DMS_DEFAULT_MODEL" ] && adapter=(--dms-adapter models/SmolLM2-135M-Instruct.dms.safetensors)
  case "$server" in
    dms) cmd=("$DMS_BUILD/dms" serve --model "$model" "${adapter[@]}" --policy dms --kv-budget "$kv_budget" \
      --max-running "$max_c" --max-queue $((2 * max_c)) --served-model-name "$server" --threads "$threads" \
      --host 127.0.0.1 --port "$port" $dms_args $dms_only_args) ;;
    dense) cmd=("$DMS_BUILD/dms" serve --model "$model" --policy dense --kv-budget "$kv_budget" \
      --max-running "$max_c" --max-queue $((2 * max_c)) --served-model-name "$server" --threads "$threads" \
      --host 127.0.0.1 --port "$port" $dms_args) ;;
    llama) cmd=("$llama_server" -m "$model" -a "$server" -t "$threads" -c $((slot_ctx * max_c)) -np "$max_c" \
      --metrics --no-webui --host 127.0.0.1 --port "$port" $llama_args) ;;
    *) echo "unknown server '$server' (dms, dense, llama)" >&2; exit 2 ;;
  esac
  echo "== $server: ${cmd[*]}"
  "${cmd[@]}" >"$out/$server.log" 2>&1 &
  pid=$!
  # Loading takes seconds; a server that exits instead is reported with its log's tail.
  until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$out/$server.log" >&2; echo "$server exited" >&2; exit 1; }
    sleep 0.5
  done
  static=()
  if [ "$server" = llama ]; then
    # The KV cache it allocates for all slots (its log says so only at debug verbosity): f16 K and
    # V (its default -ctk/-ctv) for every cell of -c, in every layer.
    static=(--static-kv-bytes "$("$py" - "$model" $((slot_ctx * max_c)) <<'PY'
import sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
f = lambda k: r.fields[k].contents() if k in r.fields else None
a = f("general.architecture")
head_dim = f(a + ".embedding_length") // f(a + ".attention.head_count")
k, v = f(a + ".attention.key_length") or head_dim, f(a + ".attention.value_length") or head_dim
print(int(sys.argv[2]) * f(a + ".block_count") * f(a + ".attention.head_count_kv") * (k + v) * 2)
PY
)")
  fi
  "$py" bench/serve_load.py --base-url "http://127.0.0.1:$port" --label "$server" --concurrency "$concurrency" \
    --prompt-tokens "$prompt_tokens" --max-tokens "$max_tokens" --requests-per-client "$per_client" --ignore-eos \
    --server-command "${cmd[*]}" "${static[@]}" --json "$out/$server.json" "${load_args[@]}" ||
    echo "$server: serve_load.py failed (exit $?)" >&2
  kill -TERM "$pid"
  wait "$pid" || true
  pid=""
  [ -f "$out/$server.json" ] && reports+=("$out/$server.json")
done
((${#reports[@]})) && "$py" bench/plot_serve.py "${reports[@]}" --out "$out/serve.png"
