"""End-to-end test of `dms eval` on the tiny Llama of tests/reference/make_eval_fixtures.py.

One small run (two documents of 120 tokens, forced eviction at fractions 0 and 0.5, every
baseline, free-running and retrieval), then its JSON against the schema docs/EVAL.md documents
and against independent computations:
  - the dense perplexity per context bucket from transformers' logits on the same tokens;
  - DMS at fraction 0 keeps every key: KL exactly 0, top-1 agreement 1, dense's perplexity, and
    the baselines matched to its memory ratio of 1 keep everything too;
  - every baseline's measured memory ratio within 5% of the DMS one it is matched to, and for a
    budget (the same keys in every head) the mean of per-head ratios equal to it;
  - a retrieval item is correct exactly when its key appears in the output as a number;
  - bench/plot_eval.py draws the four plots from the file.

Run: python tests/cli/test_eval.py  (env: DMS_BIN = the dms binary, DMS_FIXTURES = the fixture
folder, the Python with torch and transformers)
"""
import json
import math
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, check_usage_errors, dms, dms_ok, fixture, run, run_once  # noqa: E402

EVAL = fixture("eval")
CONTEXT, DOCS, BUCKETS = 120, 2, (32, 64)


# Member name -> type(s) of every object the report holds (docs/EVAL.md); None: may be null.
NUMBER = (int, float)
QUALITY = {"tokens": int, "kl": NUMBER, "top1": NUMBER, "nll": NUMBER, "ppl": NUMBER}
COMPRESSION = {"ratio": NUMBER, "memory_ratio": NUMBER, "eviction_fraction": NUMBER, "kv_bytes_ratio": NUMBER, "sequences": int}
ENTRY = {"label": str, "policy": str, "budget_ratio": (NUMBER, None), "target_cr": (NUMBER, None),
         "matched": bool, "compression": dict}
TOP = {"schema": str, "model": str, "dms_adapter": (str, None), "data": str, "settings": dict, "buckets": list,
       "documents": dict, "dms_window": int, "baseline_min_tokens": int, "retrieval_items": list, "dense": dict,
       "points": list, "free_running": dict, "seconds": NUMBER}


@run_once
def eval_run():
    """The one evaluation the tests read: (its result, its report, its folder)."""
    tmp = tempfile.mkdtemp(prefix="dms_eval_test_")
    path = os.path.join(tmp, "report.json")
    r = dms_ok("eval", "--model", os.path.join(EVAL, "tiny_base"), "--data", os.path.join(EVAL, "text.txt"),
               "--context", str(CONTEXT), "--docs", str(DOCS), "--force-evict", "0,0.5", "--dms-window", "16",
               "--buckets", ",".join(map(str, BUCKETS)), "--dense-step", "24", "--prompts", "2",
               "--prompt-tokens", "40", "--new-tokens", "6", "--retrieval-lengths", "200,260",
               "--retrieval-depths", "0,1", "--retrieval-trials", "1", "--engine-step-tokens", "64",
               "--threads", "1", "--json", path)
    with open(path) as f:
        return r, json.load(f), tmp


def reference_nll():
    """Per-position NLL of the documents under transformers' forward of the same checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    base = os.path.join(EVAL, "tiny_base")
    tok = PreTrainedTokenizerFast.from_pretrained(base)
    with open(os.path.join(EVAL, "text.txt"), encoding="utf-8") as f:
        ids = tok(f.read(), add_special_tokens=False).input_ids
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager").eval()
    out = []
    for d in range(DOCS):
        doc = torch.tensor(ids[d * CONTEXT:(d + 1) * CONTEXT])
        with torch.no_grad():
            lp = torch.log_softmax(model(doc.unsqueeze(0)).logits[0].double(), -1)
        out.append((-lp[:-1].gather(1, doc[1:].unsqueeze(1)).squeeze(1)).tolist())
    return out


class EvalReport(unittest.TestCase):
    def setUp(self):
        self.run_result, self.report, self.tmp = eval_run()

    def check_members(self, obj, spec, where):
        for key, types in spec.items():
            self.assertIn(key, obj, f"{where}: no {key!r}")
            allowed = types if isinstance(types, tuple) else (types,)
            flat = tuple(t for a in allowed if a is not None for t in (a if isinstance(a, tuple) else (a,)))
            value = obj[key]
            if value is None:
                self.assertIn(None, allowed, f"{where}.{key} is null")
            else:
                self.assertIsInstance(value, flat, f"{where}.{key}")

    def test_schema(self):
        r = self.report
        self.check_members(r, TOP, "report")
        self.assertEqual(r["schema"], "dms-eval/1")
        self.assertEqual(r["documents"]["count"], DOCS)
        self.assertEqual(r["documents"]["tokens"], [CONTEXT] * DOCS)
        self.assertEqual([b["lo"] for b in r["buckets"]], [0, *BUCKETS])
        self.assertIsNone(r["buckets"][-1]["hi"])
        self.assertEqual([p["label"] for p in r["points"]], ["dms f=0", "dms f=0.5"])
        with open(os.path.join(EVAL, "tiny_base", "config.json")) as f:
            config = json.load(f)
        layers, kv = config["num_hidden_layers"], config["num_key_value_heads"]
        for point in r["points"]:
            for section in ("teacher_forced", "free_running", "retrieval"):
                self.assertEqual([e["policy"] for e in point[section]][:4], ["dms", "streaming", "h2o", "tova"])
                for e in point[section]:
                    where = f"{point['label']} {section} {e['policy']}"
                    self.check_members(e, ENTRY, where)
                    self.check_members(e["compression"], COMPRESSION, where)
            for e in point["teacher_forced"]:
                self.check_members(e["quality"]["overall"], QUALITY, e["label"])
                per_layer, per_head = e["compression"]["per_layer"], e["compression"]["per_head"]
                self.assertEqual(len(per_layer["ratio"]), layers)
                self.assertEqual(len(per_layer["eviction_fraction"]), layers)
                self.assertEqual([len(row) for row in per_head["ratio"]], [kv] * layers)
                # Per layer is the mean of the layer's heads.
                for l in range(layers):
                    self.assertAlmostEqual(per_layer["ratio"][l], sum(per_head["ratio"][l]) / kv, places=9)
            for e in point["free_running"]:
                self.assertEqual(len(e["prefix"]), r["free_running"]["prompts"])
                self.assertTrue(0 <= e["position_match"] <= 1)
        self.assertIn("teacher-forced", self.run_result.stdout)
        self.assertIn("retrieval accuracy", self.run_result.stdout)

    def test_dense_perplexity_per_bucket_matches_transformers(self):
        nll = reference_nll()
        buckets = {b["label"]: (b["lo"], b["hi"] if b["hi"] is not None else math.inf) for b in self.report["buckets"]}
        got = self.report["dense"]["teacher_forced"]["buckets"]
        self.assertEqual(len(got), 3)
        for b in got:
            lo, hi = buckets[b["bucket"]]
            values = [v for doc in nll for pos, v in enumerate(doc) if lo <= pos < hi]
            self.assertEqual(b["tokens"], len(values), b["bucket"])
            expected = math.exp(sum(values) / len(values))
            # fp32 forwards of two implementations: logits within about 1e-5 relative.
            self.assertAlmostEqual(b["ppl"], expected, delta=1e-4 * expected, msg=b["bucket"])
            self.assertEqual(b["kl"], 0.0)
            self.assertEqual(b["top1"], 1.0)

    def test_keeping_every_key_equals_dense(self):
        dense = self.report["dense"]["teacher_forced"]["overall"]
        point = self.report["points"][0]
        for e in point["teacher_forced"]:
            q = e["quality"]["overall"]
            self.assertEqual(e["compression"]["ratio"], 1.0, e["policy"])
            self.assertEqual(e["compression"]["memory_ratio"], 1.0, e["policy"])
            self.assertEqual(e["compression"]["eviction_fraction"], 0.0, e["policy"])
            self.assertEqual(q["tokens"], dense["tokens"])
            self.assertEqual(q["top1"], 1.0, e["policy"])
            if e["policy"] == "dms":  # stepped exactly as dense is: the same numbers
                self.assertEqual(q["kl"], 0.0)
                self.assertEqual(q["ppl"], dense["ppl"])
            else:  # one token per step: fp32 summation order only
                self.assertLess(q["kl"], 1e-9, e["policy"])
                self.assertAlmostEqual(q["ppl"], dense["ppl"], delta=1e-5 * dense["ppl"])
        for e in point["free_running"]:
            self.assertEqual(e["position_match"], 1.0, e["policy"])

    def test_baselines_are_matched_within_five_percent(self):
        evicting = self.report["points"][1]
        self.assertGreater(evicting["teacher_forced"][0]["compression"]["memory_ratio"], 1.2)
        for point in self.report["points"]:
            for section in ("teacher_forced", "free_running", "retrieval"):
                target = None
                for e in point[section]:
                    c = e["compression"]
                    if e["policy"] == "dms":
                        target = c["memory_ratio"]
                        continue
                    where = f"{point['label']} {section} {e['policy']}"
                    self.assertAlmostEqual(e["target_cr"], target, places=12)
                    self.assertLessEqual(abs(c["memory_ratio"] / target - 1), 0.05, where)
                    self.assertAlmostEqual(c["ratio"], c["memory_ratio"], delta=1e-9 * c["ratio"], msg=where)
                    self.assertTrue(e["matched"])

    def test_retrieval_is_correct_exactly_when_the_key_appears(self):
        items = self.report["retrieval_items"]
        self.assertEqual(len(items), 4)
        entries = list(self.report["dense"]["retrieval"])
        for point in self.report["points"]:
            entries += point["retrieval"]
        for e in entries:
            for it in e["items"]:
                answer = items[it["item"]]["answer"]
                self.assertRegex(answer, r"^\d{5}$")
                found = re.search(rf"(?<!\d){answer}(?!\d)", it["output"]) is not None
                self.assertEqual(it["correct"], found, f"{e['label']}: {it['output']!r}")
            right = sum(it["correct"] for it in e["items"])
            self.assertAlmostEqual(e["accuracy"], right / len(e["items"]), places=12)

    def test_plots(self):
        out = os.path.join(self.tmp, "plots")
        r = run([sys.executable, os.path.join(ROOT, "bench", "plot_eval.py"), os.path.join(self.tmp, "report.json"),
                 "--out", out])
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("eval_kl_vs_cr.png", "eval_kl_by_context.png", "eval_retrieval.png", "eval_layer_compression.png"):
            with open(os.path.join(out, name), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)


class EvalUsage(unittest.TestCase):
    def test_usage_errors_exit_2_and_name_the_option(self):
        model = os.path.join(EVAL, "tiny_base")
        data = os.path.join(EVAL, "text.txt")
        check_usage_errors(self, [((), "--data"),
                                  (("--data", data, "--force-evict", "1.5"), "--force-evict"),
                                  (("--data", data, "--force-evict", "0.5", "--baselines", "lru"), "--baselines"),
                                  (("--data", data), "no DMS decision heads")],
                           before=("eval", "--model", model))

    def test_missing_data_file_exits_1_naming_it(self):
        r = dms("eval", "--model", os.path.join(EVAL, "tiny_base"), "--data", "/nonexistent/x.txt", "--force-evict", "0.5")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/x.txt", r.stderr)


if __name__ == "__main__":
    unittest.main()
