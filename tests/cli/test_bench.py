"""End-to-end test of `dms bench` on the tiny Llama of tests/reference/make_eval_fixtures.py.

One small run (contexts 64 and 200, batches 1 and 3, dense against DMS at forced eviction 0.75,
prefill, a KV budget), then its JSON against the schema docs/BENCH.md documents and against
independent computations:
  - dense KV bytes = sequences x context x the KV bytes per token `dms info --json` gives, and
    the weights a decode step reads = the bytes of every tensor in the checkpoint (read with
    safetensors);
  - the roofline = (weights + live KV) / the measured bandwidth, and the medians of the samples;
  - the largest dense batch in the budget re-derived from the block arithmetic: a block holds
    `block_size` keys of one KV head, a layer's pool budget / (layers x 2 x block_size x head_dim x
    element bytes) blocks, and a sequence of c tokens with its next token ceil((c + 1) /
    block_size) blocks per KV head;
  - bench/plot_decode.py draws the plot from the file.

Run: python tests/cli/test_bench.py  (env: DMS_BIN = the dms binary, DMS_FIXTURES = the fixture
folder, the Python with safetensors and matplotlib)
"""
import json
import math
import os
import statistics
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, check_usage_errors, dms, dms_ok, fixture, run, run_once  # noqa: E402

MODEL = fixture("eval", "tiny_base")
CONTEXTS, BATCHES, STEPS, REPEATS, BLOCK = (64, 200), (1, 3), 2, 3, 16
BUDGET = 1 << 20
SAMPLES, SAMPLE_TOKENS = (1, 3), 5


@run_once
def bench_run():
    """The one bench run the tests read: (its result, its JSON, its folder)."""
    tmp = tempfile.mkdtemp(prefix="dms_bench_test_")
    path = os.path.join(tmp, "bench.json")
    r = dms_ok("bench", "--model", MODEL, "--contexts", ",".join(map(str, CONTEXTS)),
               "--batches", ",".join(map(str, BATCHES)), "--policies", "dense,dms", "--force-evict", "0.75",
               "--dms-window", "8", "--kv-dtype", "bf16", "--block-size", str(BLOCK), "--steps", str(STEPS),
               "--repeats", str(REPEATS), "--prefill-chunk", "48", "--prefill-max-context", "64",
               "--kv-budget", str(BUDGET), "--bandwidth-mib", "16", "--threads", "1",
               "--samples", ",".join(map(str, SAMPLES)), "--samples-tokens", str(SAMPLE_TOKENS), "--samples-separate",
               "--json", path)
    with open(path) as f:
        return r, json.load(f), tmp


def model_info():
    r = dms("info", MODEL, "--json")
    if r.returncode != 0:
        raise AssertionError(f"dms info failed: {r.stderr}")
    return json.loads(r.stdout)


class BenchReport(unittest.TestCase):
    def setUp(self):
        self.run_result, self.doc, self.tmp = bench_run()
        self.info = model_info()

    def test_schema(self):
        d = self.doc
        self.assertEqual(d["schema"], "dms-bench/1")
        for key, kind in [("model", str), ("threads", int), ("kv_dtype", str), ("kv_bytes_per_token", int),
                          ("block_size", int), ("dms_window", int), ("force_evict", float), ("policies", list),
                          ("machine", dict), ("weight_bytes_per_step", int), ("decode", list), ("prefill", list),
                          ("kv_budget", dict), ("samples", list), ("peak_rss_bytes", int)]:
            self.assertIsInstance(d[key], kind, key)
        self.assertEqual(d["policies"], ["dense", "dms"])
        self.assertEqual(len(d["decode"]), len(CONTEXTS) * len(BATCHES) * 2)
        self.assertEqual(len(d["prefill"]), 2)  # only context 64 is at most --prefill-max-context
        self.assertEqual(len(d["kv_budget"]["results"]), len(CONTEXTS) * 2)
        for m in d["decode"]:
            self.assertEqual(len(m["step_ms"]), STEPS * REPEATS)
            stats = m["step_ms_stats"]
            self.assertAlmostEqual(stats["median"], statistics.median(m["step_ms"]), places=9)
            self.assertEqual((stats["min"], stats["max"]), (min(m["step_ms"]), max(m["step_ms"])))
            self.assertAlmostEqual(m["tokens_per_s"], 1e3 * m["batch"] / stats["median"], places=6)
            self.assertGreater(m["peak_rss_bytes"], 0)
        for p in d["prefill"]:
            self.assertEqual(len(p["tokens_per_s"]), REPEATS)
            self.assertAlmostEqual(p["tokens_per_s_stats"]["median"], statistics.median(p["tokens_per_s"]), places=6)
            self.assertGreater(p["tokens_per_s_stats"]["min"], 0)
        self.assertGreater(d["machine"]["read_bandwidth_bytes_per_s"], 1e8)
        self.assertGreater(d["machine"]["triad_bandwidth_bytes_per_s"], 1e8)
        self.assertGreaterEqual(d["peak_rss_bytes"], max(m["peak_rss_bytes"] for m in d["decode"]))
        self.assertIn("peak resident memory", self.run_result.stdout)

    def test_dense_kv_bytes_follow_dms_info(self):
        per_token = self.info["kv_bytes_per_token"]["bf16"]
        self.assertEqual(self.doc["kv_bytes_per_token"], per_token)
        for m in self.doc["decode"]:
            dense = m["batch"] * m["context"] * per_token
            self.assertEqual(m["dense_kv_bytes"], dense)
            if m["policy"] == "dense":
                self.assertEqual(m["compression_ratio"], 1.0)
                self.assertEqual(m["live_kv_bytes"], dense)
                # Whole blocks: the partly filled last one of each head counts in full.
                blocks = m["batch"] * self.info["layers"] * self.info["kv_heads"] * math.ceil(m["context"] / BLOCK)
                self.assertEqual(m["kv_bytes"], blocks * BLOCK * per_token // (self.info["layers"] * self.info["kv_heads"]))
            else:
                self.assertGreater(m["compression_ratio"], 1.2)
                self.assertLess(m["kv_bytes"], dense)

    def test_roofline_is_weights_and_live_kv_over_bandwidth(self):
        from safetensors import safe_open
        weights = 0
        with safe_open(os.path.join(MODEL, "model.safetensors"), "pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                weights += t.numel() * t.element_size()
        # fp32 checkpoint computed in fp32, embedding tied to the output projection: a decode
        # step reads every stored tensor once.
        self.assertEqual(self.doc["weight_bytes_per_step"], weights)
        bw = self.doc["machine"]["read_bandwidth_bytes_per_s"]
        for m in self.doc["decode"]:
            roof = 1e3 * (weights + m["live_kv_bytes"]) / bw
            self.assertAlmostEqual(m["roofline_ms"], roof, delta=1e-9 * roof)
            self.assertAlmostEqual(m["roofline_fraction"], roof / m["step_ms_stats"]["median"], delta=1e-9)

    def test_largest_dense_batch_in_the_budget(self):
        layers, kv, head_dim = self.info["layers"], self.info["kv_heads"], self.info["head_dim"]
        blocks_per_layer = BUDGET // (layers * 2 * BLOCK * head_dim * 2)
        budget = self.doc["kv_budget"]
        self.assertEqual(budget["bytes"], BUDGET)
        by = {(r["policy"], r["context"]): r for r in budget["results"]}
        for c in CONTEXTS:
            dense = by[("dense", c)]
            expected = blocks_per_layer // (kv * math.ceil((c + 1) / BLOCK))
            self.assertEqual(dense["max_batch"], expected, f"context {c}")
            self.assertLessEqual(dense["bytes_held"], dense["pool_bytes"])
            self.assertGreater(by[("dms", c)]["max_batch"], dense["max_batch"], f"context {c}")

    def test_samples_of_one_prompt(self):
        """N samples: every (context, N, shared or separate, policy) timed; N dense copies' bytes from
        `dms info`; one prefill shared holds less than N separate ones, and as much for N = 1."""
        per_token = self.info["kv_bytes_per_token"]["bf16"]
        rows = self.doc["samples"]
        self.assertEqual(len(rows), len(CONTEXTS) * len(SAMPLES) * 2 * 2)
        by = {(m["policy"], m["context"], m["samples"], m["shared"]): m for m in rows}
        for m in rows:
            self.assertEqual(m["tokens"], SAMPLE_TOKENS)
            for key in ("first_token_s", "decode_tokens_per_s"):
                self.assertEqual(len(m[key]), REPEATS)
                self.assertTrue(all(x > 0 for x in m[key]), (key, m))
                self.assertAlmostEqual(m[key + "_stats"]["median"], statistics.median(m[key]), places=9)
            # The engine takes its peaks after each step, once the sequences that ended in it are
            # gone: forked samples decode in step, so the largest is after the step before their
            # last, each having run the prompt and its first tokens - 2 tokens. Separate ones
            # start and end at different steps.
            most = m["samples"] * (m["context"] + SAMPLE_TOKENS - 2) * per_token
            if m["shared"]:
                self.assertEqual(m["peak_dense_bytes"], most)
            else:
                self.assertLessEqual(m["peak_dense_bytes"], most)
        for policy in ("dense", "dms"):
            for c in CONTEXTS:
                one_shared, one_separate = by[(policy, c, 1, True)], by[(policy, c, 1, False)]
                self.assertEqual(one_shared["peak_bytes_held"], one_separate["peak_bytes_held"])
                shared, separate = by[(policy, c, 3, True)], by[(policy, c, 3, False)]
                self.assertLess(shared["peak_bytes_held"], separate["peak_bytes_held"], (policy, c))

    def test_plot(self):
        png = os.path.join(self.tmp, "bench.png")
        r = run([sys.executable, os.path.join(ROOT, "bench", "plot_decode.py"), os.path.join(self.tmp, "bench.json"),
                 png])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(png, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class BenchUsage(unittest.TestCase):
    def test_usage_errors_exit_2_and_name_the_option(self):
        check_usage_errors(self, [(("--kv-budget", "lots"), "--kv-budget"), (("--contexts", "0"), "--contexts"),
                                  (("--policies", "h2o"), "--target-cr"), (("--repeats", "0"), "--repeats"),
                                  (("--policies", "dense", "--kv-budget", "1KiB"),
                                   "--kv-budget: kv budget: 1024 bytes hold no block"),
                                  (("--policies", "dense", "--force-evict", "0.5"), "--force-evict"),
                                  (("--kv-memory", "1GiB"), "--kv-memory"), (("--samples", "0"), "--samples"),
                                  (("--samples-tokens", "1"), "--samples-tokens")],
                           before=("bench", "--model", MODEL))

    def test_kv_budget_is_the_cache_size(self):
        for command in ("bench", "generate"):
            r = dms(command, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
            lines = [line for line in r.stdout.splitlines() if line.startswith("  --kv-budget")]
            self.assertEqual(len(lines), 1, f"{command}: {lines}")
            self.assertIn("KV cache size", lines[0], command)


if __name__ == "__main__":
    unittest.main()
