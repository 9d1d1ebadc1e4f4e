"""Closed-loop load benchmark for an OpenAI-compatible server (`dms serve`, llama-server, ...).

For each concurrency level C, exactly C clients each send one streaming request, wait for its
last chunk, and send the next (closed loop), until the level's request count or duration is
reached. Prompts are long (default 2-4K tokens), pseudo-random English-like text seeded per
request, so runs are reproducible, every server sees the same prompts, and no two prompts share a
prefix (no prefix or prompt cache can help), unless --shared-prefix-tokens puts the same text of
that length before each (a system message with --endpoint chat): the workload a prefix cache is
for. Per level it reports:

  TTFT   time from sending the request to its first non-empty streamed chunk
  TPOT   per request, (end-to-end - TTFT) / (output tokens - 1)
  ITL    every gap between consecutive non-empty streamed chunks
  (each as p50/p90/p99), output and prompt tokens/s and requests/s over the level's wall time,
  the prompt tokens the server's usage says it took from its cache (prompt_tokens_details),
  errors, and the peaks of the server's GET /metrics gauges, polled during the level: for dms
  serve dms_kv_bytes_held, dms_kv_dense_bytes, dms_kv_blocks_used/_total,
  dms_requests_running/_waiting, and what the level added to dms_preemptions_total; for
  llama-server (--metrics) llamacpp:requests_processing/_deferred.

Output tokens come from the server's usage (stream_options.include_usage) when it sends one, else
from the number of non-empty chunks. Requests ask for --max-tokens; not every server honours
`ignore_eos`, so the actual output length is reported (--ignore-eos sends it anyway).

"Max concurrent streams sustained" is the highest C at which the server ran all C requests at
once without running out of cache: its running gauge peaked at C, no request was preempted for
memory (dms_preemptions_total), the cache never filled (dms_kv_blocks_used below _total) and
none failed. Why not "nothing ever waited": in a closed loop a new request waits for the current
engine step (a prefill chunk, about a second here) even when there is room, so dms serve's
waiting gauge is above 0 at every level past C=1. Why the cache must not fill: dms serve counts a
request as running from admission, which needs room for its first prefill chunk only; in a full
cache, admitted requests stall mid-prefill while still counted. Also reported per level: the
running gauge's mean over the polls, and "streams", the client-side peak of requests between
their first token and their end (decoding at once; it stays below C when prefill is the
bottleneck and a reply ends before the next prompt is in). Without a running gauge, streams
decides.

The client runs on the same machine as the server and takes CPU from it (the openai client
parses every chunk in Python): compare servers under the same client, not against offline numbers.

    python bench/serve_load.py --base-url http://127.0.0.1:8080 --label llama-server \\
        --concurrency 1,2,4 --prompt-tokens 2048 --max-tokens 32 --json out.json

One JSON file per run (schema dms-serve-load/1): label, command lines, CPU model, settings, and
per level the summary plus every request's numbers. bench/plot_serve.py plots several of them.
"""
import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import time

from openai import AsyncOpenAI

try:
    import httpx2 as httpx  # the HTTP client openai 3.x is built on
except ImportError:
    import httpx  # openai 1.x and 2.x

SCHEMA = "dms-serve-load/1"

# Gauges read from /metrics: the first name a server exports wins, so one report covers both
# servers. llama-server's KV cache is allocated once at start, so it exports no bytes held.
GAUGES = {
    "running": ["dms_requests_running", "llamacpp:requests_processing"],
    "waiting": ["dms_requests_waiting", "llamacpp:requests_deferred"],
    "kv_bytes_held": ["dms_kv_bytes_held"],
    "kv_dense_bytes": ["dms_kv_dense_bytes"],
    "kv_blocks_used": ["dms_kv_blocks_used"],
    "kv_blocks_total": ["dms_kv_blocks_total"],
}

# Small grammar over common words: text that reads like English to the tokenizer (ordinary
# word pieces, punctuation, capitals) without depending on any corpus file.
WORDS = {
    "det": "the a this that every some each one another no my our their his her its".split(),
    "adj": ("old new small large quiet bright dark cold warm early late simple strange careful "
            "green red blue heavy light narrow wide quick slow happy tired busy empty full distant "
            "local ancient modern rough smooth honest wooden silver broken open hidden").split(),
    "noun": ("man woman child teacher farmer doctor river mountain city village road house garden "
             "window door table letter book story market ship train bridge forest field winter summer "
             "morning evening night storm light voice friend engine machine paper plan report answer "
             "question problem idea picture song game island harbor kitchen school office factory").split(),
    "verb": ("found saw built carried opened closed watched followed wrote read painted moved "
             "crossed lost kept left sold bought cleaned fixed broke heard remembered described "
             "explained measured counted changed visited answered ignored reached").split(),
    "prep": "near under over behind beside across through inside after before without along".split(),
    "adv": ("slowly quickly quietly carefully suddenly finally often never always again later "
            "yesterday today soon almost nearly").split(),
    "conj": "and but so while because although when until".split(),
}


def noun_phrase(rng):
    words = [rng.choice(WORDS["det"])]
    if rng.random() < 0.6:
        words.append(rng.choice(WORDS["adj"]))
    words.append(rng.choice(WORDS["noun"]))
    return words


def sentence(rng):
    words = noun_phrase(rng)
    if rng.random() < 0.3:
        words.append(rng.choice(WORDS["adv"]))
    words += [rng.choice(WORDS["verb"])] + noun_phrase(rng)
    if rng.random() < 0.5:
        words += [rng.choice(WORDS["prep"])] + noun_phrase(rng)
    if rng.random() < 0.3:
        words += [rng.choice(WORDS["conj"])] + noun_phrase(rng) + [rng.choice(WORDS["verb"])] + noun_phrase(rng)
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice([".", ".", ".", "!", "?", ";"])


def make_prompt(seed, n_words):
    """About n_words words of text, the same for the same seed on every machine and Python."""
    rng = random.Random(seed)  # str seeds hash with SHA-512: stable across runs
    out, n, para = [], 0, 0
    while n < n_words:
        s = sentence(rng)
        out.append(s)
        n += s.count(" ") + 1
        para += 1
        if para >= rng.randint(4, 9):
            out.append("\n\n")
            para = 0
    return " ".join(out).replace(" \n\n ", "\n\n").strip()


def pct(xs, p):
    """Percentile by linear interpolation (numpy's default), None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def stats(xs):
    return {"n": len(xs), "mean": sum(xs) / len(xs) if xs else None,
            "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99)}


def parse_metrics(text):
    """Prometheus text format -> {series: value}; series keeps its labels, if any."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+?(?:\{[^}]*\})?)\s+(\S+)", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


class Scraper:
    """Polls GET /metrics while a level runs and keeps the peak of every series, plus a short
    time series of the gauges in GAUGES (for checking when the peak happened)."""

    def __init__(self, http, url, interval):
        self.http, self.url, self.interval = http, url, interval
        self.enabled = True

    async def scrape(self):
        r = await self.http.get(self.url, timeout=10)
        r.raise_for_status()
        return parse_metrics(r.text)

    async def run(self, level, t0, stop):
        peaks, series, first, last = {}, [], None, None
        while self.enabled:
            try:
                m = await self.scrape()
            except httpx.HTTPStatusError as e:
                if e.response.status_code in (404, 405, 501):
                    # Not there (llama-server without --metrics answers 501): run without.
                    self.enabled = False
                    break
                m = None
            except (httpx.HTTPError, OSError):
                m = None  # a busy server may miss one poll; the next one counts
            for k, v in (m or {}).items():
                peaks[k] = max(v, peaks.get(k, v))
            if m:
                first, last = first or m, m
                series.append([round(time.perf_counter() - t0, 3)] + [pick(m, names) for names in GAUGES.values()])
            level["metric_samples"] = len(series)
            if stop.is_set():
                break  # one sample after the last request ended
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
        level["metric_peaks"] = peaks
        # Counters (preemptions, rejections, tokens) as what the level added.
        level["counter_deltas"] = {k: v - first.get(k, 0) for k, v in (last or {}).items() if k.endswith("_total")}
        level["metric_series"] = {"columns": ["t"] + list(GAUGES), "rows": series}


def pick(m, names):
    return next((m[n] for n in names if n in m), None)


class Bench:
    def __init__(self, args):
        self.args = args
        base = args.base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=base)
        # No retries: a failed request is an error of the level, not something to hide.
        self.client = AsyncOpenAI(base_url=base + "/v1", api_key=args.api_key, max_retries=0,
                                  timeout=args.request_timeout)
        self.scraper = Scraper(self.http, "/metrics", args.metrics_interval) if args.metrics_interval > 0 else None
        self.tokens_per_word = None
        self.shared = None  # the text every prompt starts with (--shared-prefix-tokens)

    def body(self, prompt, max_tokens, stream):
        a = self.args
        kw = dict(model=a.model, max_tokens=max_tokens, temperature=a.temperature, stream=stream)
        if a.top_p is not None:
            kw["top_p"] = a.top_p
        if stream:
            kw["stream_options"] = {"include_usage": True}
        extra = {"ignore_eos": True} if a.ignore_eos else {}
        if a.seed is not None and a.temperature > 0:
            kw["seed"] = a.seed
        if a.endpoint == "chat":
            kw["messages"] = ([{"role": "system", "content": self.shared}] if self.shared else []) + [
                {"role": "user", "content": prompt}]
        else:
            kw["prompt"] = self.shared + "\n\n" + prompt if self.shared else prompt
        return kw, extra

    async def calibrate(self):
        """One request, not timed: warms the server up and measures its tokens per generated word,
        so prompts hit --prompt-tokens for this server's tokenizer (and chat template). Its prompt
        stays under the shortest one asked for, so it fits any context the sweep fits."""
        n_words = max(50, min(1000, self.args.prompt_tokens[0] // 2))
        kw, extra = self.body(make_prompt(f"{self.args.seed}-calibrate", n_words), 1, False)
        api = self.client.chat.completions if self.args.endpoint == "chat" else self.client.completions
        r = await api.create(**kw, extra_body=extra)
        if r.usage and r.usage.prompt_tokens:
            self.tokens_per_word = r.usage.prompt_tokens / n_words
        else:
            self.tokens_per_word = 1.3
            print("calibration: no usage in the response; assuming 1.3 tokens per word", file=sys.stderr)
        if self.args.shared_prefix_tokens > 0:
            self.shared = make_prompt(f"{self.args.seed}-shared",
                                      max(1, round(self.args.shared_prefix_tokens / self.tokens_per_word)))

    def prompt_for(self, c, i):
        rng = random.Random(f"{self.args.seed}-{c}-{i}-length")
        lo, hi = self.args.prompt_tokens
        target = rng.randint(lo, hi)
        return target, make_prompt(f"{self.args.seed}-{c}-{i}", max(1, round(target / self.tokens_per_word)))

    async def one(self, c, i):
        target, prompt = self.prompt_for(c, i)
        kw, extra = self.body(prompt, self.args.max_tokens, True)
        rec = {"i": i, "target_prompt_tokens": target, "ok": False}
        chunks, usage, err = [], None, None
        t0 = time.perf_counter()
        try:
            if self.args.endpoint == "chat":
                stream = await self.client.chat.completions.create(**kw, extra_body=extra)
                async for ch in stream:
                    if ch.usage:
                        usage = ch.usage
                    if ch.choices and ch.choices[0].delta and ch.choices[0].delta.content:
                        chunks.append(time.perf_counter())
            else:
                stream = await self.client.completions.create(**kw, extra_body=extra)
                async for ch in stream:
                    if ch.usage:
                        usage = ch.usage
                    if ch.choices and ch.choices[0].text:
                        chunks.append(time.perf_counter())
        except Exception as e:  # every failure counts as an error of the level
            err = f"{type(e).__name__}: {e}"[:300]
        t1 = time.perf_counter()
        rec.update(start=t0, end=t1, e2e=t1 - t0, chunks=len(chunks))
        if err or not chunks:
            rec["error"] = err or "no content streamed"
            return rec
        tokens = usage.completion_tokens if usage and usage.completion_tokens else len(chunks)
        rec.update(ok=True, first=chunks[0], ttft=chunks[0] - t0, output_tokens=tokens,
                   tokens_from_usage=bool(usage and usage.completion_tokens),
                   prompt_tokens=usage.prompt_tokens if usage else None,
                   cached_tokens=getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None),
                   tpot=(t1 - chunks[0]) / (tokens - 1) if tokens > 1 else None,
                   itl=[b - a for a, b in zip(chunks, chunks[1:])])
        return rec

    async def level(self, c):
        a = self.args
        n = a.requests if a.requests > 0 else a.requests_per_client * c
        level = {"concurrency": c}
        recs, issued = [], 0
        t0 = time.perf_counter()
        deadline = t0 + a.duration if a.duration > 0 else None
        stop = asyncio.Event()
        scrape = asyncio.create_task(self.scraper.run(level, t0, stop)) if self.scraper else None

        async def client():
            nonlocal issued
            while issued < n and (deadline is None or time.perf_counter() < deadline):
                i = issued
                issued += 1
                recs.append(await self.one(c, i))

        await asyncio.gather(*(client() for _ in range(c)))
        wall = time.perf_counter() - t0
        stop.set()
        if scrape:
            await scrape
        level.update(summarize(recs, c, wall))
        for r in recs:  # times relative to the level's start, so the file is readable
            for k in ("start", "end", "first"):
                if k in r:
                    r[k] = round(r[k] - t0, 4)
            if "itl" in r:
                r["itl"] = [round(x, 5) for x in r["itl"]]
        level["requests_detail"] = sorted(recs, key=lambda r: r["i"])
        return level


def summarize(recs, c, wall):
    ok = [r for r in recs if r["ok"]]
    errs = [r for r in recs if not r["ok"]]
    out_tokens = sum(r["output_tokens"] for r in ok)
    # Client-side peak of requests between their first token and their end.
    events = sorted([(r["first"], 1) for r in ok] + [(r["end"], -1) for r in ok], key=lambda e: (e[0], e[1]))
    cur = peak = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    prompt = [r["prompt_tokens"] for r in ok if r.get("prompt_tokens")]
    return {
        "requests": len(recs), "completed": len(ok), "errors": len(errs),
        "error_samples": sorted({r["error"] for r in errs})[:5],
        "wall_s": wall,
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / wall,
        # Prefill work done per second: most of the work with long prompts.
        "prompt_tokens_per_s": sum(r["prompt_tokens"] or 0 for r in ok) / wall,
        "total_prompt_tokens": sum(r["prompt_tokens"] or 0 for r in ok),
        "requests_per_s": len(ok) / wall,
        "prompt_tokens": stats(prompt),
        "cached_prompt_tokens": sum(r.get("cached_tokens") or 0 for r in ok),
        "output_tokens_per_request": stats([r["output_tokens"] for r in ok]),
        "tokens_from_usage": all(r["tokens_from_usage"] for r in ok) if ok else None,
        "ttft_s": stats([r["ttft"] for r in ok]),
        "tpot_s": stats([r["tpot"] for r in ok if r["tpot"] is not None]),
        "itl_s": stats([x for r in ok for x in r["itl"]]),
        "e2e_s": stats([r["e2e"] for r in ok]),
        "client_peak_streaming": peak,
    }


def derive(level, c):
    """The named gauges' peaks, and whether all C streams ran at once."""
    peaks = level.get("metric_peaks", {})
    for key, names in GAUGES.items():
        level["peak_" + key] = pick(peaks, names)
    level["preemptions"] = level.get("counter_deltas", {}).get("dms_preemptions_total")
    running = [r[1] for r in level.get("metric_series", {}).get("rows", []) if r[1] is not None]
    level["mean_running"] = sum(running) / len(running) if running else None
    used, total = level["peak_kv_blocks_used"], level["peak_kv_blocks_total"]
    level["kv_full"] = used >= total if used is not None and total else None
    if level["peak_running"] is not None:
        level["sustained"] = (level["peak_running"] >= c and not level["preemptions"] and not level["kv_full"]
                              and not level["errors"])
        level["sustained_from"] = "server gauges"
    else:
        level["sustained"] = level["client_peak_streaming"] >= c and not level["errors"]
        level["sustained_from"] = "client streams"


def fmt(x, scale=1.0, digits=0):
    return "-" if x is None else f"{x * scale:.{digits}f}"


def print_table(doc):
    mib = 1 / 2**20
    head = (f"{'C':>3} {'ok':>4} {'err':>3} {'out tok/s':>9} {'prompt tok/s':>12} {'req/s':>6} {'prompt':>6} "
            f"{'out':>5} {'TTFT p50/p90/p99 s':>20} {'TPOT p50/p90/p99 ms':>21} {'ITL p50/p99 ms':>15} "
            f"{'run peak/mean':>13} {'streams':>7} {'wait':>4} {'preempt':>7} {'KV held MiB':>11} {'dense MiB':>9} "
            f"{'blocks %':>8} {'cached %':>8}")
    print(f"{doc['label']}  ({doc['cpu']}; {doc['settings']['endpoint']}, max_tokens {doc['settings']['max_tokens']})")
    print(head)
    for lv in doc["levels"]:
        t, p, i = lv["ttft_s"], lv["tpot_s"], lv["itl_s"]
        used, total = lv["peak_kv_blocks_used"], lv["peak_kv_blocks_total"]
        blocks = used / total if used is not None and total else None
        print(f"{lv['concurrency']:>3} {lv['completed']:>4} {lv['errors']:>3} {lv['output_tokens_per_s']:>9.1f} "
              f"{lv['prompt_tokens_per_s']:>12.1f} {lv['requests_per_s']:>6.2f} {fmt(lv['prompt_tokens']['mean']):>6} "
              f"{fmt(lv['output_tokens_per_request']['mean']):>5} "
              f"{fmt(t['p50'], 1, 2) + '/' + fmt(t['p90'], 1, 2) + '/' + fmt(t['p99'], 1, 2):>20} "
              f"{fmt(p['p50'], 1e3, 1) + '/' + fmt(p['p90'], 1e3, 1) + '/' + fmt(p['p99'], 1e3, 1):>21} "
              f"{fmt(i['p50'], 1e3, 1) + '/' + fmt(i['p99'], 1e3, 1):>15} "
              f"{fmt(lv['peak_running']) + '/' + fmt(lv['mean_running'], 1, 1):>13} {lv['client_peak_streaming']:>7} "
              f"{fmt(lv['peak_waiting']):>4} {fmt(lv['preemptions']):>7} "
              f"{fmt(lv['peak_kv_bytes_held'], mib, 1):>11} {fmt(lv['peak_kv_dense_bytes'], mib, 1):>9} "
              f"{fmt(blocks, 100, 0):>8} "
              f"{fmt(lv['cached_prompt_tokens'] / lv['total_prompt_tokens'] if lv['total_prompt_tokens'] else None, 100, 0):>8}")
    for lv in doc["levels"]:
        for e in lv["error_samples"]:
            print(f"  C={lv['concurrency']} error: {e}")
    s = doc["max_sustained_concurrency"]
    print(f"max concurrent streams sustained: {s if s is not None else 'none'} ({doc['sustained_from']})")


def parse_range(s):
    lo, _, hi = s.partition(":")
    return int(lo), int(hi or lo)


async def main_async(args):
    bench = Bench(args)
    try:
        if not args.model:
            models = (await bench.http.get("/v1/models", timeout=30)).json()
            args.model = models["data"][0]["id"]
        try:
            await bench.calibrate()
        except Exception as e:
            raise SystemExit(f"calibration request to {args.base_url} failed: {type(e).__name__}: {e}")
        doc = {
            "schema": SCHEMA, "label": args.label or os.path.basename(args.model), "model": args.model,
            "base_url": args.base_url,
            "command": " ".join(shlex.quote(x) for x in [sys.executable] + sys.argv),
            "server_command": args.server_command, "cpu": cpu_model(), "nproc": os.cpu_count(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "static_kv_bytes": args.static_kv_bytes,
            "tokens_per_word": bench.tokens_per_word,
            "settings": {k: getattr(args, k) for k in (
                "endpoint", "concurrency", "requests", "requests_per_client", "duration", "prompt_tokens",
                "max_tokens", "temperature", "top_p", "ignore_eos", "seed", "metrics_interval",
                "shared_prefix_tokens")},
            "levels": [],
        }
        for c in args.concurrency:
            lv = await bench.level(c)
            derive(lv, c)
            doc["levels"].append(lv)
            print(f"  C={c}: {lv['completed']}/{lv['requests']} ok, {lv['output_tokens_per_s']:.1f} out tok/s, "
                  f"TPOT p50 {fmt(lv['tpot_s']['p50'], 1e3, 1)} ms, peak running {fmt(lv['peak_running'])}",
                  file=sys.stderr, flush=True)
        ok = [lv for lv in doc["levels"] if lv["sustained"]]
        doc["max_sustained_concurrency"] = max((lv["concurrency"] for lv in ok), default=None)
        doc["sustained_from"] = doc["levels"][0]["sustained_from"] if doc["levels"] else None
        return doc
    finally:
        await bench.client.close()
        await bench.http.aclose()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8080", help="server root (without /v1)")
    p.add_argument("--model", help="model name to request (default: the first of GET /v1/models)")
    p.add_argument("--label", help="server label in the report (default: the model name)")
    p.add_argument("--api-key", default="none")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions",
                   help="completions sends the raw prompt; chat wraps it in the chat template")
    p.add_argument("--concurrency", default="1,2,4,8", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated client counts, one level each")
    p.add_argument("--requests", type=int, default=0, help="requests per level (default: --requests-per-client x C)")
    p.add_argument("--requests-per-client", type=int, default=2)
    p.add_argument("--duration", type=float, default=0,
                   help="seconds per level after which no new request starts (0: no limit)")
    p.add_argument("--prompt-tokens", type=parse_range, default=(2048, 4096),
                   help="prompt length range MIN:MAX (or one value) in tokens, drawn per request")
    p.add_argument("--shared-prefix-tokens", type=int, default=0,
                   help="every prompt starts with the same text of about N tokens (the system message with "
                        "--endpoint chat); --prompt-tokens is then the length of what follows")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-p", type=float)
    p.add_argument("--ignore-eos", action="store_true", help="send ignore_eos: true (llama-server honours it)")
    p.add_argument("--seed", type=int, default=0, help="prompt seed (and sampling seed with --temperature > 0)")
    p.add_argument("--metrics-interval", type=float, default=0.2, help="seconds between /metrics polls (0: off)")
    p.add_argument("--request-timeout", type=float, default=900)
    p.add_argument("--static-kv-bytes", type=int,
                   help="KV cache bytes the server allocates up front, recorded for servers without a held gauge")
    p.add_argument("--server-command", help="the server's command line, recorded in the report")
    p.add_argument("--json", help="report path (default bench/serve/<label>-<time>.json)")
    args = p.parse_args()

    doc = asyncio.run(main_async(args))
    path = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve",
                                     f"{doc['label']}-{time.strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print_table(doc)
    print(f"wrote {path}")
    # Errors at a level are results (a server past its capacity may refuse); fail only if nothing worked.
    return 0 if any(lv["completed"] for lv in doc["levels"]) else 1


if __name__ == "__main__":
    sys.exit(main())
