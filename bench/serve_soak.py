"""Soak test of `dms serve`: many clients for a long time, some leaving mid-stream, some sending
malformed requests. Passes when no request fails unexpectedly, the server's resident memory stays
flat, and once the clients stop every KV block is back in the pool but those the prefix cache
keeps (dms_kv_blocks_used equals dms_prefix_cache_blocks).

Starts the server itself (on a free loopback port; extra arguments after `--` go to it), runs
--clients closed-loop clients for --minutes, samples the server's RSS and /metrics every 10 s, and
prints (and with --json writes) the counts, the RSS series and the final metrics. Not part of CI.

    $DMS_VENV/bin/python bench/serve_soak.py --clients 64 --minutes 10 --json bench/serve/soak.json \
        -- --kv-budget 256MiB --max-running 32

Each client loops over: a streamed chat request read to its end (45%), a streamed completion it
closes after a few chunks (20%), a whole (non-streamed) completion (20%), and a malformed request
that must get its 4xx (15%: bad JSON, a wrong type, an unknown model, a missing field, max_tokens 0).
"""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPICS = ["rivers", "bread", "owls", "trains", "snow", "copper", "violins", "moss", "tides", "lanterns"]
MALFORMED = [  # (body, status the server must answer)
    (b'{"messages": [', 400),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}).encode(), 400),
    (json.dumps({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}).encode(), 404),
    (json.dumps({"max_tokens": 4}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}).encode(), 400),
]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def start_server(dms, server_args):
    log = tempfile.NamedTemporaryFile("w+", prefix="dms-soak-", suffix=".log", delete=False)
    proc = subprocess.Popen([dms, "serve", "--port", "0", *server_args], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline:
        with open(log.name) as f:
            m = re.search(r"serving '(.*)' on http://127\.0\.0\.1:(\d+)", f.read())
        if m:
            return proc, m.group(1), int(m.group(2)), log.name
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    sys.exit(f"dms serve did not start; its log: {log.name}")


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.unexpected = []

    def add(self, kind):
        with self.lock:
            self.ok[kind] = self.ok.get(kind, 0) + 1

    def fail(self, what):
        with self.lock:
            self.unexpected.append(what)


def client_loop(i, port, model, stop_at, counts):
    rng = random.Random(i)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
    while time.time() < stop_at:
        r = rng.random()
        topic = rng.choice(TOPICS)
        max_tokens = rng.randint(8, 64)
        try:
            if r < 0.45:
                stream = client.chat.completions.create(
                    model=model, stream=True, max_tokens=max_tokens, temperature=0.8, seed=rng.randint(0, 10**6),
                    messages=[{"role": "user", "content": f"Write a few lines about {topic}."}])
                finish = [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason]
                if finish not in (["stop"], ["length"]):
                    counts.fail(f"client {i}: stream ended with {finish}")
                else:
                    counts.add("stream")
            elif r < 0.65:
                stream = client.completions.create(model=model, stream=True, max_tokens=max_tokens,
                                                   prompt=f"A story about {topic}:")
                for n, _ in enumerate(stream):
                    if n == rng.randint(1, 4):
                        break
                stream.close()
                counts.add("disconnect")
            elif r < 0.85:
                out = client.completions.create(model=model, max_tokens=max_tokens, prompt=f"Facts about {topic}:")
                if out.usage.completion_tokens < 1:
                    counts.fail(f"client {i}: empty completion")
                else:
                    counts.add("whole")
            else:
                body, status = rng.choice(MALFORMED)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                payload = json.loads(resp.read().decode())
                conn.close()
                if resp.status != status or "message" not in payload.get("error", {}):
                    counts.fail(f"client {i}: malformed request answered {resp.status}: {payload}")
                else:
                    counts.add("malformed")
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            counts.fail(f"client {i}: {e!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--dms", default=os.path.join(ROOT, "build", "dms"))
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("server_args", nargs="*", help="after --: arguments of dms serve")
    a = ap.parse_args()

    proc, model, port, log = start_server(a.dms, a.server_args)
    counts = Counts()
    start = time.time()
    stop_at = start + a.minutes * 60
    threads = [threading.Thread(target=client_loop, args=(i, port, model, stop_at, counts)) for i in range(a.clients)]
    for t in threads:
        t.start()
    series = []
    while any(t.is_alive() for t in threads):
        m = metrics(port)
        series.append({"t": round(time.time() - start, 1), "rss": rss_bytes(proc.pid),
                       "running": m.get("dms_requests_running", 0), "waiting": m.get("dms_requests_waiting", 0),
                       "kv_blocks_used": m.get("dms_kv_blocks_used", 0),
                       "kv_bytes_held_peak": m.get("dms_kv_bytes_held_peak", 0)})
        with counts.lock:
            done = sum(counts.ok.values())
        print(f"{series[-1]['t']:7.1f} s  rss {series[-1]['rss'] / 2**20:7.1f} MiB  running {series[-1]['running']:3.0f}"
              f"  waiting {series[-1]['waiting']:3.0f}  requests done {done}  unexpected {len(counts.unexpected)}",
              flush=True)
        time.sleep(10)
    for t in threads:
        t.join()
    # Aborts reach the engine at its next step: give it a moment to go idle.
    deadline = time.time() + 60
    while time.time() < deadline and metrics(port).get("dms_requests_running", 1) > 0:
        time.sleep(0.2)
    final = metrics(port)
    proc.terminate()
    exit_code = proc.wait(timeout=120)

    # Flat: the last minute's RSS against the second minute's (the first warms allocators up).
    def rss_at(t0, t1):
        xs = [s["rss"] for s in series if t0 <= s["t"] < t1]
        return max(xs) if xs else 0
    end = series[-1]["t"] if series else 0
    early, late = rss_at(60, 120), rss_at(end - 60, end + 1)
    result = {
        "command": " ".join(["dms serve", *a.server_args]),
        "clients": a.clients, "minutes": a.minutes, "counts": counts.ok, "unexpected": counts.unexpected,
        "rss_second_minute_max": early, "rss_last_minute_max": late,
        "final_kv_blocks_used": final.get("dms_kv_blocks_used"),
        "final_prefix_cache_blocks": final.get("dms_prefix_cache_blocks"), "final_running": final.get("dms_requests_running"),
        "final_waiting": final.get("dms_requests_waiting"), "aborted": final.get("dms_requests_aborted_total"),
        "generated_tokens": final.get("dms_generation_tokens_total"), "server_exit_code": exit_code,
        "server_log": log, "series": series,
        "cpu": subprocess.run(["lscpu"], capture_output=True, text=True).stdout.split("Model name:")[1].split("\n")[0].strip(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "series"}, indent=1))
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    # Idle, the only blocks in use are the prefix cache's (the same number, none leaked).
    ok = (not counts.unexpected and final.get("dms_kv_blocks_used") == final.get("dms_prefix_cache_blocks", 0)
          and exit_code == 0
          and (early == 0 or late <= early * 1.10))
    print("soak:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
