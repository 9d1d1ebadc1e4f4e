"""End-to-end tests of the `dms` command line on the default model.

References are independent of dms.cpp: gguf-py reads the GGUF for `dms info`, and transformers
(its own GGUF loader, dequantized to fp32, greedy decoding) gives the text that `dms generate`
and `dms chat` must reproduce token for token.

Run: python tests/cli/test_cli.py  (env: DMS_BIN = the dms binary, DMS_DEFAULT_MODEL = the GGUF)
"""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_usage_errors, dms, transformers_gguf  # noqa: E402

MODEL = os.environ["DMS_DEFAULT_MODEL"]
GREEDY = ["--temperature", "0", "--threads", "2"]
# The default model without the DMS adapter shipped for it: what transformers computes.
DENSE = [*GREEDY, "--no-dms-adapter"]


class Reference:
    """transformers' reading of the default GGUF, loaded once."""

    @staticmethod
    def get():
        return transformers_gguf(MODEL)

    @classmethod
    def greedy(cls, prompt_text, n):
        import torch
        tok, model = cls.get()
        ids = tok(prompt_text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    @classmethod
    def chat_prompt(cls, messages):
        tok, _ = cls.get()
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class Help(unittest.TestCase):
    def test_every_command_has_help(self):
        top = dms("--help")
        self.assertEqual(top.returncode, 0)
        for cmd in ["generate", "chat", "info"]:
            self.assertIn(cmd, top.stdout)
            r = dms(cmd, "--help")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"usage: dms {cmd}", r.stdout)

    def test_usage_errors_exit_2_and_name_the_problem(self):
        check_usage_errors(self, [
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["generate", "--no-such-flag", "x"], "--no-such-flag"),
            (["generate", "--top-p", "2", "x"], "--top-p"),
            (["generate", "--max-tokens", "ten", "x"], "--max-tokens: expected an integer, got 'ten'"),
            (["generate", "--dtype", "f8", "x"], "--dtype"),
            (["generate", "--temperature"], "--temperature: needs a value"),
        ])


class Info(unittest.TestCase):
    def test_info_agrees_with_gguf_metadata(self):
        import gguf
        r = dms("info", "--json", MODEL)
        self.assertEqual(r.returncode, 0, r.stderr)
        info = json.loads(r.stdout)
        g = gguf.GGUFReader(MODEL)
        meta = lambda k: g.fields[k].contents()
        arch = meta("general.architecture")
        self.assertEqual(info["architecture"], arch)
        self.assertEqual(info["layers"], meta(f"{arch}.block_count"))
        self.assertEqual(info["hidden_size"], meta(f"{arch}.embedding_length"))
        self.assertEqual(info["intermediate_size"], meta(f"{arch}.feed_forward_length"))
        self.assertEqual(info["attention_heads"], meta(f"{arch}.attention.head_count"))
        self.assertEqual(info["kv_heads"], meta(f"{arch}.attention.head_count_kv"))
        self.assertEqual(info["context_length"], meta(f"{arch}.context_length"))
        self.assertEqual(info["vocab_size"], len(g.fields["tokenizer.ggml.tokens"].data))
        self.assertEqual(info["parameters"], sum(int(t.n_elements) for t in g.tensors))
        types = {}
        for t in g.tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        self.assertEqual(info["tensor_types"], types)
        head_dim = info["hidden_size"] // info["attention_heads"]
        self.assertEqual(info["kv_bytes_per_token"]["bf16"], 2 * info["layers"] * info["kv_heads"] * head_dim * 2)
        # q8: head_dim int8 levels and an fp16 scale per 32 of them (per row when 32 does not divide it)
        scales = head_dim // 32 if head_dim % 32 == 0 else 1
        self.assertEqual(info["kv_bytes_per_token"]["q8"],
                         2 * info["layers"] * info["kv_heads"] * (head_dim + 2 * scales))
        self.assertEqual(info["file_bytes"], os.path.getsize(MODEL))
        # Inference holds the matrices the kernels read as stored at their size in the file, the
        # rest (norms) as f32.
        as_stored = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16"}
        held = sum(int(t.n_bytes) if len(t.shape) == 2 and t.tensor_type.name in as_stored else 4 * int(t.n_elements)
                   for t in g.tensors)
        self.assertEqual(info["weight_bytes"], held)

    def test_default_model_is_used_without_arguments(self):
        r = dms("info", "--json", env={**os.environ, "DMS_MODEL": MODEL})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["path"], MODEL)


class Generate(unittest.TestCase):
    def test_chat_prompt_greedy_matches_transformers(self):
        question = "What is the capital of France?"
        expect = Reference.greedy(Reference.chat_prompt([{"role": "user", "content": question}]), 24)
        r = dms("generate", "--chat", *DENSE, "--max-tokens", "24", question)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.rstrip("\n"), expect.split("<|im_end|>")[0])
        self.assertIn("tok/s", r.stderr)

    def test_completion_from_stdin_matches_transformers(self):
        prompt = "The three primary colors are"
        expect = Reference.greedy(prompt, 20)
        r = dms("generate", *DENSE, "--max-tokens", "20", stdin=prompt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.rstrip("\n"), expect)

    def test_stop_string_ends_the_text_before_it(self):
        question = "What is the capital of France?"
        full = Reference.greedy(Reference.chat_prompt([{"role": "user", "content": question}]), 24)
        word = "Paris"
        self.assertIn(word, full, "the reference continuation no longer contains the stop word")
        r = dms("generate", "--chat", *DENSE, "--max-tokens", "24", "--stop", word, question)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.rstrip("\n"), full[: full.index(word)])
        self.assertIn("stopped: stop string", r.stderr)

    def test_the_default_model_runs_with_its_shipped_dms_adapter(self):
        question = "Write a short story about a lighthouse keeper and a storm."
        r = dms("generate", "--chat", *GREEDY, "--max-tokens", "300", "--ignore-eos", question)
        self.assertEqual(r.returncode, 0, r.stderr)
        report = [line for line in r.stderr.splitlines() if line.startswith("KV cache (dms")][0]
        self.assertIn("window 128", report)
        self.assertGreater(float(report.split("compression ratio ")[1].split(" ")[0]), 1.5, report)
        # Mode B heads leave the attention itself alone: until a flagged key leaves the 128-token
        # window, nothing is evicted and the tokens are transformers' dense ones.
        tok, _ = Reference.get()
        prompt = Reference.chat_prompt([{"role": "user", "content": question}])
        free = 128 - len(tok(prompt, add_special_tokens=False).input_ids)
        self.assertGreater(free, 8, "the prompt no longer leaves room inside the window")
        expect = Reference.greedy(prompt, free)
        self.assertTrue(r.stdout.startswith(expect), f"{r.stdout[:200]!r} vs {expect!r}")
        dense = dms("generate", "--chat", *DENSE, "--max-tokens", "8", question)
        self.assertIn("KV cache (dense", dense.stderr)

    def test_sampling_is_reproducible_with_a_seed(self):
        args = ["generate", "--temperature", "1.0", "--seed", "123", "--max-tokens", "16", "Once upon a time"]
        a, b = dms(*args), dms(*args)
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertEqual(a.stdout, b.stdout)

    def test_bad_model_paths_fail_cleanly(self):
        with tempfile.TemporaryDirectory() as tmp:
            not_gguf = os.path.join(tmp, "notes.txt")
            with open(not_gguf, "w") as f:
                f.write("hello")
            truncated = os.path.join(tmp, "cut.gguf")
            with open(MODEL, "rb") as src, open(truncated, "wb") as dst:
                dst.write(src.read(100000))
            empty_dir = os.path.join(tmp, "empty")
            os.mkdir(empty_dir)
            cases = [
                (os.path.join(tmp, "missing.gguf"), "no such file"),
                (not_gguf, "not a GGUF file"),
                (truncated, truncated),
                (empty_dir, "no config.json"),
            ]
            for path, message in cases:
                for cmd in (["info", path], ["generate", "--model", path, "hi"]):
                    r = dms(*cmd)
                    self.assertEqual(r.returncode, 1, f"{cmd}: {r.stderr}")
                    self.assertIn(path, r.stderr, cmd)
                    self.assertIn(message, r.stderr, cmd)
                    self.assertNotIn("terminate called", r.stderr)

    def test_bad_kernel_settings_fail_cleanly(self):
        for var, words in (("DMS_ACTIVATIONS", "i16, f32"), ("DMS_CPU_ISA", "scalar, avx2, avx512")):
            r = dms("generate", *DENSE, "--max-tokens", "2", "hi", env={**os.environ, var: "fast"})
            self.assertEqual(r.returncode, 1, f"{var}: {r.stderr}")
            self.assertIn(var, r.stderr)
            self.assertIn(f"'fast' is not one of {words}", r.stderr)
            self.assertNotIn("terminate called", r.stderr)

    def test_fp32_activations_give_the_same_greedy_text(self):
        r16 = dms("generate", *DENSE, "--max-tokens", "24", "Water boils at")
        r32 = dms("generate", *DENSE, "--max-tokens", "24", "Water boils at", env={**os.environ, "DMS_ACTIVATIONS": "f32"})
        self.assertEqual(r16.returncode, 0, r16.stderr)
        self.assertEqual(r32.returncode, 0, r32.stderr)
        self.assertEqual(r16.stdout, r32.stdout)


class Cache(unittest.TestCase):
    """The paged cache's policies, batching and reports, through the command line."""

    def test_forced_dms_eviction_reports_compression_and_draws_a_map(self):
        with tempfile.TemporaryDirectory() as tmp:
            png = os.path.join(tmp, "map.png")
            r = dms("generate", *GREEDY, "--max-tokens", "96", "--policy", "dms", "--force-evict", "0.875",
                    "--dms-window", "16", "--kv-map", png, "Once upon a time")
            self.assertEqual(r.returncode, 0, r.stderr)
            report = [line for line in r.stderr.splitlines() if line.startswith("KV cache (dms")][0]
            cr = float(report.split("compression ratio ")[1].split(" ")[0])
            evicted = float(report.split("eviction fraction ")[1].split(" ")[0])
            # 100 tokens, 16 always in the window, 7/8 of the rest flagged: about 100 / (16 + 84/8).
            self.assertGreater(cr, 2.5)
            self.assertAlmostEqual(evicted, 0.875, delta=0.08)
            with open(png, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_parallel_samples_and_lines(self):
        r = dms("generate", "--temperature", "0.8", "--seed", "5", "--max-tokens", "8", "--parallel", "3",
                "--ignore-eos", "Once upon a time")
        self.assertEqual(r.returncode, 0, r.stderr)
        for i in range(3):
            self.assertIn(f"=== {i} ===", r.stdout)
        self.assertIn("3 sequences, 3 at a time", r.stderr)
        self.assertIn("decode after the first token: 21 tokens in", r.stderr)  # 3 x (8 - 1)
        # One sequence per line, two at a time; greedy, so each equals its own single run.
        lines = "The capital of France is\nThe three primary colors are\nOnce upon a time\n"
        batched = dms("generate", *GREEDY, "--max-tokens", "12", "--parallel", "2", "--lines", stdin=lines)
        self.assertEqual(batched.returncode, 0, batched.stderr)
        for i, prompt in enumerate(lines.splitlines()):
            single = dms("generate", *GREEDY, "--max-tokens", "12", prompt)
            part = batched.stdout.split(f"=== {i} ===\n")[1].split("\n=== ")[0].rstrip("\n")
            self.assertEqual(part, single.stdout.rstrip("\n"), prompt)

    def test_baselines_run_within_their_budget(self):
        for policy in ["streaming", "h2o", "tova"]:
            r = dms("generate", *GREEDY, "--max-tokens", "80", "--policy", policy, "--budget", "32",
                    "Once upon a time")
            self.assertEqual(r.returncode, 0, f"{policy}: {r.stderr}")
            report = [line for line in r.stderr.splitlines() if line.startswith(f"KV cache ({policy}")][0]
            self.assertGreater(float(report.split("compression ratio ")[1].split(" ")[0]), 2.0, policy)

    def test_cache_usage_errors(self):
        check_usage_errors(self, [
            (["--no-dms-adapter", "--policy", "dms"], "has no DMS decision heads"),
            (["--policy", "h2o"], "exactly one of --target-cr R or --budget N"),
            (["--policy", "nonsense", "--budget", "8"], "--policy"),
            (["--policy", "dense", "--force-evict", "0.5"], "only meaningful with --policy dms"),
            (["--kv-dtype", "f8"], "--kv-dtype"),
            (["--kv-budget", "lots"], "--kv-budget"),
            (["--kv-budget", "1KiB"], "--kv-budget: 1.0 KiB holds no block"),
        ], before=("generate",), after=("hello",))

    def test_too_small_a_cache_ends_the_sequence_cleanly(self):
        r = dms("generate", *DENSE, "--max-tokens", "64", "--kv-budget", "200KiB", "--block-size", "4",
                "Once upon a time")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("stopped: kv cache full", r.stderr)


class Chat(unittest.TestCase):
    def test_two_turns_match_transformers(self):
        first, second = "What is the capital of France?", "And of Italy?"
        conv = [{"role": "user", "content": first}]
        reply1 = Reference.greedy(Reference.chat_prompt(conv), 24).split("<|im_end|>")[0]
        conv += [{"role": "assistant", "content": reply1}, {"role": "user", "content": second}]
        reply2 = Reference.greedy(Reference.chat_prompt(conv), 24).split("<|im_end|>")[0]
        r = dms("chat", *DENSE, "--max-tokens", "24", "--stats", stdin=f"{first}\n{second}\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, f"{reply1}\n{reply2}\n")
        # The second turn reuses the first turn's cache: far fewer tokens are prefilled than the
        # whole conversation holds.
        prefilled = [int(line.split("prompt: ")[1].split(" tokens")[0]) for line in r.stderr.splitlines()
                     if line.startswith("[prompt: ")]
        tok, _ = Reference.get()
        whole = len(tok(Reference.chat_prompt(conv), add_special_tokens=False).input_ids)
        self.assertEqual(len(prefilled), 2)
        self.assertLess(prefilled[1], whole // 2)
        # Without the prefix cache the second turn runs the whole conversation, to the same reply.
        r = dms("chat", *DENSE, "--max-tokens", "24", "--stats", "--no-prefix-cache", stdin=f"{first}\n{second}\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, f"{reply1}\n{reply2}\n")
        prefilled = [int(line.split("prompt: ")[1].split(" tokens")[0]) for line in r.stderr.splitlines()
                     if line.startswith("[prompt: ")]
        self.assertEqual(prefilled[1], whole)


if __name__ == "__main__":
    unittest.main(verbosity=2)
