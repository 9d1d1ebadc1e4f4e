"""End-to-end tests of `dms solve` on the default model (with its shipped DMS adapter).

The JSON report against a re-derivation in Python: each point's correct count from the runs'
answers by the documented vote (the most frequent non-empty answer, ties to the one that appears
first) and the problems' answers, the accuracy, its Wilson interval and the memory means; the
baselines' budgets. Resuming from a partial-results file against a run without one, a partial
file of other settings, bad task files and bad options against the exit status and the message,
and the plot script on the report.

Run: python tests/cli/test_solve.py  (env: DMS_BIN = the dms binary, DMS_DEFAULT_MODEL = the GGUF)
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, check_usage_errors, dms, dms_ok, write_jsonl  # noqa: E402

PROBLEMS = [
    {"id": "a", "family": "arithmetic", "level": 1, "question": "Tom has 7 apples. He buys 5 more apples. "
     "How many apples does Tom have now?", "answer": "12"},
    {"id": "b", "family": "ordering", "level": 1, "question": "Anna is taller than Ben. Who is shorter: Anna or Ben?",
     "answer": "Ben", "choices": ["Anna", "Ben"]},
    {"id": "c", "family": "algebra", "level": 1, "question": "Solve for x: x + 3 = 10.", "answer": "7"},
]
FAST = ["--threads", "2", "--samples", "1,3", "--max-tokens", "8,24", "--at-once", "2", "--kv-dtype", "f32"]


def majority(answers):
    votes = Counter(a for a in answers if a)
    if not votes:
        return ""
    top = max(votes.values())
    return next(a for a in answers if a and votes[a] == top)


def wilson(correct, n, z=1.959963984540054):
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Solve(unittest.TestCase):
    _report = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.tasks = os.path.join(cls.tmp.name, "tasks.jsonl")
        write_jsonl(cls.tasks, PROBLEMS)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def report(self):
        """The report of all three problems under dense, dms and h2o; run once for the class."""
        if Solve._report is None:
            out = self.path("report.json")
            dms_ok("solve", "--tasks", self.tasks, "--policies", "dense,dms,h2o", *FAST, "--json", out)
            with open(out) as f:
                Solve._report = json.load(f)
        return Solve._report

    def test_report_against_its_runs(self):
        r = self.report()
        self.assertEqual(r["problems"], 3)
        self.assertEqual([p["name"] for p in r["policies"]], ["dense", "dms", "h2o"])
        for pol in r["policies"]:
            runs = pol["runs"]
            self.assertEqual([x["id"] for x in runs], ["a", "b", "c"])
            self.assertEqual(len(pol["points"]), 4)
            for x in runs:
                self.assertTrue(all(1 <= n <= 24 for n in x["generated"]), x)
                self.assertEqual([len(a) for a in x["answers"]], [3, 3])
            for point in pol["points"]:
                li = [8, 24].index(point["max_tokens"])
                ki = [1, 3].index(point["k"])
                correct = sum(majority(x["answers"][li][:point["k"]]) == p["answer"] for x, p in zip(runs, PROBLEMS))
                self.assertEqual(point["correct"], correct, point)
                self.assertEqual(point["problems"], 3)
                self.assertAlmostEqual(point["accuracy"], correct / 3)
                for got, want in zip(point["ci95"], wilson(correct, 3)):
                    self.assertAlmostEqual(got, want, places=9)
                self.assertAlmostEqual(point["mean_peak_kv_bytes"], sum(x["peak_kv_bytes"][li][ki] for x in runs) / 3)
                self.assertAlmostEqual(point["mean_kv_read_bytes"], sum(x["kv_read_bytes"][li][ki] for x in runs) / 3)
            families = {(g["family"], g["level"]) for g in pol["by_family"]}
            self.assertEqual(families, {("arithmetic", 1), ("ordering", 1), ("algebra", 1)})
            for x in runs:  # more samples and more tokens never hold or read less
                self.assertLessEqual(x["peak_kv_bytes"][0][0], x["peak_kv_bytes"][1][1])
                self.assertLess(x["kv_read_bytes"][0][0], x["kv_read_bytes"][1][1])
        by = {p["name"]: p for p in r["policies"]}
        self.assertEqual(by["dense"]["memory_ratio"], 1.0)
        self.assertIsNone(by["dense"]["budget_ratio"])
        self.assertGreaterEqual(by["h2o"]["budget_ratio"], 1.0)
        self.assertEqual(r["settings"]["samples"], [1, 3])

    def test_resume_from_a_partial_file_gives_the_same_runs(self):
        partial = self.path("partial.jsonl")
        dms_ok("solve", "--tasks", self.tasks, "--problems", "2", "--policies", "dense,dms,h2o", *FAST,
               "--partial", partial)
        out = self.path("resumed.json")
        r = dms_ok("solve", "--tasks", self.tasks, "--policies", "dense,dms,h2o", *FAST, "--partial", partial,
                   "--json", out)
        self.assertIn("dense: 1/1 problems", r.stderr)  # only the third problem ran
        with open(out) as f:
            resumed = json.load(f)
        for a, b in zip(resumed["policies"], self.report()["policies"]):
            self.assertEqual(a["runs"], b["runs"], a["name"])
            self.assertEqual(a["budget_ratio"], b["budget_ratio"])
        with open(partial) as f:
            lines = [json.loads(line) for line in f]
        self.assertIn("settings", lines[0])  # then every problem of every policy, h2o's again at the new budget
        self.assertEqual({(x["policy"], x["id"]) for x in lines[1:]}, {(p, i) for p in ("dense", "dms", "h2o") for i in "abc"})
        h2o = [x for x in lines[1:] if x["policy"] == "h2o"]
        self.assertEqual(len(h2o), 3 if h2o[0]["budget_ratio"] == h2o[-1]["budget_ratio"] else 5)
        other = [a if a != "1,3" else "1,2" for a in FAST]
        r = dms("solve", "--tasks", self.tasks, "--policies", "dense", *other, "--partial", partial)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("'samples' differs", r.stderr)

    def test_plot(self):
        self.report()
        out = self.path("plots")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "plot_tasks.py"), self.path("report.json"),
                            "--out", out], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "tasks_accuracy_vs_memory.png"), "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_usage_errors_exit_2_and_name_the_option(self):
        check_usage_errors(self, [
            ([], "--tasks"),
            (["--tasks", self.tasks, "--samples", "2,1"], "--samples"),
            (["--tasks", self.tasks, "--max-tokens", "8,8"], "--max-tokens"),
            (["--tasks", self.tasks, "--policies", "h2o"], "needs dms"),
            (["--tasks", self.tasks, "--policies", "dense,lru"], "unknown eviction policy 'lru'"),
            (["--tasks", self.tasks, "--temperature", "-1"], "temperature"),
            (["--tasks", self.tasks, "--at-once", "0"], "--at-once"),
        ], before=["solve"])

    def test_bad_task_files_exit_1_naming_file_and_line(self):
        bad = self.path("bad.jsonl")
        with open(bad, "w") as f:
            f.write(json.dumps(PROBLEMS[0]) + "\n" + json.dumps({"id": "z", "family": "f", "question": "q"}) + "\n")
        for path, words in ((bad, bad + ":2: member 'answer' is missing"),
                            (self.path("missing.jsonl"), "missing.jsonl: cannot open")):
            r = dms("solve", "--tasks", path, "--threads", "2")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(words, r.stderr)


if __name__ == "__main__":
    unittest.main()
