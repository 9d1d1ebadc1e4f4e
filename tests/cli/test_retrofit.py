"""End-to-end tests of `dms retrofit` on a tiny model.

The model is the tiny random Qwen3 checkpoint of the fixtures ($DMS_FIXTURES/models/qwen3,
vocabulary 320) with a byte-level BPE tokenizer built here with `tokenizers` (the 256 byte
tokens, ids below the model's vocabulary). The data is random word text generated here with a
fixed seed. Checked: the eviction fraction reaches its target while the held-out KL stays
bounded, and the adapter loads and generates; a run resumed from its checkpoint (after --steps,
and after SIGINT) logs the same losses as an uninterrupted run; a run continues from an adapter
(--dms-adapter); --device; seeds; --train all writes a Hugging Face directory that loads; bad
input gives clear errors.

Run: python tests/cli/test_retrofit.py  (env: DMS_BIN = the dms binary, DMS_FIXTURES, DMS_DEFAULT_MODEL)
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DMS, ROOT, cuda_devices, dms, fixture, read_log, steps_of, write_jsonl  # noqa: E402

DEFAULT_MODEL = os.environ.get("DMS_DEFAULT_MODEL")
WORDS = ("the cat sat on a mat while seven dogs ran past the old red barn and one bird sang "
         "about rain wind snow sun light dark river stone tree green blue").split()
# Settings shared by the runs: rows of 64 tokens, window 8, CR 1.5 reached by step 10.
BASE = {"--threads": "2", "--seq-len": "64", "--batch": "2", "--dms-window": "8", "--target-cr": "1.5",
        "--ramp-steps": "10", "--lr": "3e-3", "--seed": "3"}
LOSSES = ("step", "loss", "distill", "compress", "frac", "target_cr", "grad_norm")


def settings(**changes):
    """BASE with options replaced: settings(dms_window="9") gives --dms-window 9."""
    merged = dict(BASE)
    merged.update({"--" + k.replace("_", "-"): v for k, v in changes.items()})
    return [x for kv in merged.items() for x in kv]


def finished_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().count("\n")


def losses(out):
    """The logged losses of each step of the run in out."""
    return steps_of(read_log(out), LOSSES)


def make_model(directory):
    """The fixture Qwen3 with a byte-level tokenizer whose ids fit its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    src = fixture("models", "qwen3")
    os.makedirs(directory)
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, name), directory)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens([f"<extra_{i}>" for i in range(320 - len(vocab))])  # every id the model can sample
    tok.save(os.path.join(directory, "tokenizer.json"))


def make_documents(n, seed, words=(40, 90)):
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))} for _ in range(n)]


class Retrofit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dms-retrofit-test-")
        cls.model = os.path.join(cls.tmp.name, "model")
        make_model(cls.model)
        cls.data = os.path.join(cls.tmp.name, "train.jsonl")
        cls.heldout = os.path.join(cls.tmp.name, "heldout.jsonl")
        write_jsonl(cls.data, make_documents(60, 1))
        write_jsonl(cls.heldout, make_documents(8, 2))
        # The uninterrupted reference run that the resumed runs must reproduce.
        cls.straight = cls.run_to(cls, "straight", 20, extra=["--checkpoint-every", "7"])

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def run_to(self, name, steps, extra=(), expect=0, **changes):
        out = os.path.join(self.tmp.name, name)
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--heldout", self.heldout, "--out", out,
                "--steps", str(steps), *settings(**changes), *extra)
        if r.returncode != expect:
            raise AssertionError(f"exit {r.returncode}, expected {expect}\n{r.stderr[-3000:]}")
        return out

    def test_reaches_the_target_and_the_adapter_generates(self):
        out = self.run_to("long", 40, extra=["--eval-every", "20"])
        log = read_log(out)
        steps = steps_of(log, LOSSES)
        self.assertEqual([s["step"] for s in steps], list(range(1, 41)))
        self.assertLess(steps[0]["frac"], 0.05, "a fresh adapter evicts almost nothing")
        target = 1 - 1 / 1.5
        last = sum(s["frac"] for s in steps[-5:]) / 5
        self.assertGreater(last, 0.9 * target, "the eviction fraction should reach its target")
        evals = [r for r in log if r["type"] == "eval"]
        self.assertEqual([e["step"] for e in evals], [0, 20, 40])
        self.assertLess(evals[0]["heldout_frac"], 0.05, "the fresh heads, before any step, evict almost nothing")
        print(f"\nfrac {steps[0]['frac']:.3f} -> {last:.3f}; held-out {evals[-1]}")
        self.assertGreater(evals[-1]["heldout_frac"], 0.5 * target)
        self.assertLess(evals[-1]["heldout_kl"], 0.5, "held-out KL to the teacher should stay bounded")
        summary = log[-1]
        self.assertEqual(summary["type"], "summary")
        self.assertEqual(summary["dms"]["dms_window_size"], 8)

        adapter = os.path.join(out, "adapter.safetensors")
        g = dms("generate", "--model", self.model, "--dms-adapter", adapter, "--temperature", "0", "--max-tokens",
                "40", "--ignore-eos", "the cat sat on the mat and the dog ran past the barn while one bird")
        self.assertEqual(g.returncode, 0, g.stderr)
        self.assertTrue(g.stdout.strip())

    def test_resume_after_steps_continues_the_same_curve(self):
        out = self.run_to("resumed", 10, extra=["--checkpoint-every", "7"])
        self.assertEqual(losses(out), losses(self.straight)[:10])
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--heldout", self.heldout, "--out", out,
                "--steps", "20", *settings(), "--resume")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertIn("resuming after step 10", r.stderr)
        self.assertIn("done, 20 steps (10 after --resume) in ", r.stderr)
        self.assertEqual(losses(out), losses(self.straight))

    def test_sigint_saves_a_checkpoint_that_resumes_the_same_curve(self):
        out = self.path("interrupted")
        cmd = [DMS, "retrofit", "--model", self.model, "--data", self.data, "--heldout", self.heldout, "--out", out,
               "--steps", "20", *settings(), "--checkpoint-every", "100"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log_path = os.path.join(out, "log.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if os.path.exists(log_path) and finished_lines(log_path) >= 3:
                break
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        if p.returncode == 0:
            self.skipTest("the run finished before the signal arrived")
        self.assertEqual(p.returncode, 130, err[-3000:])
        self.assertIn("--resume", err)
        done = len(losses(out))
        self.assertGreaterEqual(done, 3)
        r = dms(*cmd[1:], "--resume")
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        self.assertEqual(losses(out), losses(self.straight))

    def test_seeds(self):
        same = self.run_to("same-seed", 5)
        self.assertEqual(losses(same), losses(self.straight)[:5])
        other = self.run_to("other-seed", 5, seed="4")
        self.assertNotEqual([s["loss"] for s in losses(other)],
                            [s["loss"] for s in losses(same)])

    def test_training_continues_from_an_adapter(self):
        """--dms-adapter: the run starts from the adapter's heads (its eviction fraction, not a
        fresh head's 0) and takes the settings not given from it (the window of 8 here; the
        default 256 would not even fit rows of 64)."""
        adapter = os.path.join(self.straight, "adapter.safetensors")
        trained = losses(self.straight)[-1]["frac"]
        out = self.path("from-adapter")
        args = [a for kv in BASE.items() if kv[0] != "--dms-window" for a in kv]
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--heldout", self.heldout, "--out", out,
                "--steps", "3", "--dms-adapter", adapter, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("from the heads of " + os.path.realpath(adapter), r.stderr)
        log = read_log(out)
        first = steps_of(log, LOSSES)[0]["frac"]
        print(f"\nfrac at the end of the adapter's run {trained:.3f}; first step from it {first:.3f}")
        self.assertGreater(first, 0.5 * trained)
        self.assertEqual(log[-1]["dms"]["dms_window_size"], 8)
        # A setting given on the command line wins; a missing or foreign adapter is an error naming it.
        out = self.path("from-adapter-window")
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", out, "--steps", "1",
                "--dms-adapter", adapter, *settings(dms_window="5"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(read_log(out)[-1]["dms"]["dms_window_size"], 5)
        # --start-cr: the schedule goes on from the adapter's ratio instead of rising again from 1.
        out = self.path("from-adapter-start")
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", out, "--steps", "3",
                "--dms-adapter", adapter, "--start-cr", "1.2", *settings())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("CR 1.2 -> 1.5 over 10 steps", r.stderr)
        self.assertEqual([round(s["target_cr"], 9) for s in losses(out)], [1.2, 1.23, 1.26])
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", self.path("start-above-target"),
                "--steps", "1", "--dms-adapter", adapter, "--start-cr", "2", *settings())
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--start-cr: must be at least 1 and at most --target-cr (got 2)", r.stderr)
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", self.path("no-adapter"), "--steps",
                "1", "--dms-adapter", self.path("missing.safetensors"), *settings())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("missing.safetensors", r.stderr)
        shipped = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.dms.safetensors")
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", self.path("foreign-adapter"),
                "--steps", "1", "--dms-adapter", shipped, *settings())
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("SmolLM2-135M-Instruct.dms.safetensors", r.stderr)

    def test_device(self):
        """--device: a bad name is a usage error; a GPU this machine lacks is an error before anything
        is written; on a machine with one, the run on it logs the CPU run's curve."""
        out = self.path("device-bad")
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", out, "--steps", "3",
                *settings(device="tpu"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--device: 'tpu' is not a device (expected cpu, cuda or cuda:N)", r.stderr)
        missing = "cuda:64" if cuda_devices() else "cuda"
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", out, "--steps", "3",
                *settings(device=missing))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("there is no CUDA device 64" if cuda_devices() else "no CUDA device is available", r.stderr)
        self.assertFalse(os.path.exists(out), "nothing is written for a run that cannot start")
        if not cuda_devices():
            print("\nno CUDA device: the run on a GPU is not compared here")
            return
        gpu = losses(self.run_to("cuda", 10, device="cuda"))
        cpu = losses(self.straight)[:10]
        # fp32 on two devices: sums in other orders; a decision within rounding of 0 may flip
        # (1/768 of frac each: 128 rows, 3 layers, 2 KV heads). Not yet measured on a GPU.
        for a, b in zip(cpu, gpu):
            self.assertLess(abs(a["distill"] - b["distill"]), 1e-3 * a["distill"] + 1e-6, f"step {a['step']}")
            self.assertLess(abs(a["frac"] - b["frac"]), 0.02, f"step {a['step']}")

    def test_blockwise_attention_trains_as_the_dense_one(self):
        """--attention-block 16 (rows of 64 attended in blocks of 16 keys and queries) logs the
        dense run's first steps: fp32 sums in other orders, so within 1e-3 of the distillation loss
        and 0.02 of the eviction fraction, as across devices. A negative block is a usage error."""
        blockwise = losses(self.run_to("blockwise", 4, extra=["--attention-block", "16"]))
        for a, b in zip(losses(self.straight)[:4], blockwise):
            self.assertLess(abs(a["distill"] - b["distill"]), 1e-3 * a["distill"] + 1e-6, f"step {a['step']}")
            self.assertLess(abs(a["frac"] - b["frac"]), 0.02, f"step {a['step']}")
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--out", self.path("block-bad"), "--steps", "1",
                *settings(), "--attention-block", "-1")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--attention-block", r.stderr)

    def test_train_all_writes_a_hugging_face_directory(self):
        out = self.run_to("all", 4, extra=["--train", "all"], lr="1e-4")
        with open(os.path.join(out, "model", "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self.assertTrue(config["dms_separate_alpha"])
        self.assertEqual(config["dms_window_size"], 8)
        self.assertTrue(os.path.exists(os.path.join(out, "model", "tokenizer.json")))
        g = dms("generate", "--model", os.path.join(out, "model"), "--temperature", "0", "--max-tokens", "8",
                "--ignore-eos", "the cat sat")
        self.assertEqual(g.returncode, 0, g.stderr)

    def test_bad_input(self):
        def fails(extra, data=None, message="", code=None, **changes):
            out = tempfile.mkdtemp(dir=self.tmp.name)
            r = dms("retrofit", "--model", self.model, "--data", data or self.data, "--out", out, "--steps", "3",
                    *settings(**changes), *extra)
            self.assertNotEqual(r.returncode, 0, r.stderr)
            if code is not None:
                self.assertEqual(r.returncode, code, r.stderr)
            self.assertIn(message, r.stderr)
            self.assertNotIn("terminate called", r.stderr)

        empty = self.path("empty.jsonl")
        open(empty, "w").close()
        fails([], empty, "empty.jsonl")
        malformed = self.path("malformed.jsonl")
        with open(malformed, "w") as f:
            f.write('{"text": "fine"}\n{"text": oops}\n')
        fails([], malformed, "malformed.jsonl:2")
        short = self.path("short.jsonl")
        write_jsonl(short, [{"text": "too short"}])
        fails(["--heldout-fraction", "0"], short, "one sequence needs 64 tokens")
        fails([], target_cr="0.5", message="--target-cr: must be at least 1", code=2)
        fails([], dms_window="100", message="--dms-window", code=2)
        fails(["--train", "heads"], message="--train: unknown training target 'heads'", code=2)

        # Changing what defines the run on --resume is refused.
        r = dms("retrofit", "--model", self.model, "--data", self.data, "--heldout", self.heldout, "--out",
                self.straight, "--steps", "30", *settings(dms_window="9"), "--resume")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("window (saved 8, now 9)", r.stderr)

        # An adapter for another architecture is refused by generate.
        if DEFAULT_MODEL:
            adapter = os.path.join(self.straight, "adapter.safetensors")
            g = dms("generate", "--model", DEFAULT_MODEL, "--dms-adapter", adapter, "--max-tokens", "2", "hi")
            self.assertEqual(g.returncode, 1, g.stderr)
            self.assertIn("adapter.safetensors", g.stderr)
            # --train all from a GGUF base is refused: there is no Hugging Face directory to export.
            out = tempfile.mkdtemp(dir=self.tmp.name)
            r = dms("retrofit", "--model", DEFAULT_MODEL, "--data", self.data, "--out", out, "--steps", "1",
                    "--train", "all", "--seq-len", "64", "--dms-window", "8", "--threads", "2")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("GGUF", r.stderr)


if __name__ == "__main__":
    unittest.main()
