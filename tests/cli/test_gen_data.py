"""End-to-end tests of `dms gen-data` on the default model.

Greedy replies are checked against transformers' own greedy decoding of the chat-rendered
prompt (its GGUF loader, dequantized to fp32); the held-out split against a re-derivation of the
documented hash in Python; resuming against a fresh run; a prompt's "parts", each reply against
transformers' greedy reply to the conversation before it; bad input against the exit status and
the message. scripts/chain-conversations, which chains a corpus into multi-turn conversations,
against the pairs it was given; scripts/collect-docs, long documents for training, against pydoc.

Run: python tests/cli/test_gen_data.py  (env: DMS_BIN = the dms binary, DMS_DEFAULT_MODEL = the GGUF)
"""
import json
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, check_usage_errors, dms, read_jsonl, run, transformers_gguf, write_jsonl  # noqa: E402

MODEL = os.environ["DMS_DEFAULT_MODEL"]
FAST = ["--threads", "2", "--parallel", "2", "--kv-dtype", "f32"]

PROMPTS = [
    {"id": "sum", "category": "arithmetic", "prompt": "What is 17 + 25? Answer step by step."},
    {"id": "sky", "prompt": "Why is the sky blue?"},
    {"id": "poem", "category": "poem", "prompt": "Write two lines about rain.",
     "system": "You are a poet who answers briefly."},
    {"id": "code", "prompt": "Write a Python function that adds two numbers."},
]


def by_key(records):
    return {(r["id"], r["sample"]): r for r in records}


def split_hash(key):
    """FNV-1a 64 of the UTF-8 bytes, then the splitmix64 finaliser (src/dms/train/data_documents.h)."""
    mask = (1 << 64) - 1
    h = 0xCBF29CE484222325
    for b in key.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    h ^= h >> 31
    return h


def held_out(key, fraction):
    return (split_hash(key) >> 11) * 2.0 ** -53 < fraction


class Reference:
    """transformers' reading of the default GGUF, loaded once."""

    @staticmethod
    def reply(messages, n):
        import torch
        tok, model = transformers_gguf(MODEL)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=False).split("<|im_end|>")[0]


class GenData(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.prompts = self.path("prompts.jsonl")
        write_jsonl(self.prompts, PROMPTS)

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def run_ok(self, *args):
        r = dms("gen-data", "--prompts", self.prompts, *FAST, *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_greedy_replies_match_transformers(self):
        out = self.path("out.jsonl")
        r = self.run_ok("--temperature", "0", "--max-tokens", "16", "--out", out)
        self.assertIn("tok/s", r.stderr)
        self.assertIn("ETA", r.stderr)
        records = read_jsonl(out)
        self.assertEqual(sorted(x["id"] for x in records), sorted(p["id"] for p in PROMPTS))
        for p in PROMPTS:
            rec = next(x for x in records if x["id"] == p["id"])
            asked = ([{"role": "system", "content": p["system"]}] if "system" in p else []) + \
                    [{"role": "user", "content": p["prompt"]}]
            self.assertEqual(rec["messages"][:-1], asked, p["id"])
            self.assertEqual(rec["messages"][-1]["role"], "assistant")
            self.assertEqual(rec["messages"][-1]["content"], Reference.reply(asked, 16), p["id"])
            self.assertEqual(rec["sample"], 0)
            self.assertEqual(rec.get("category"), p.get("category"))
            self.assertIn(rec["stop_reason"], ["stop token", "stop string", "max tokens"])
            self.assertTrue(1 <= rec["reply_tokens"] <= 16)

    def test_parts_make_a_conversation_whose_every_reply_sees_all_before(self):
        prompts = self.path("parts.jsonl")
        doc = {"id": "doc", "prompt": "Write one line about rivers.",
               "parts": ["Now one line about lakes.", "And one about the sea."]}
        write_jsonl(prompts, [doc, {"id": "one", "prompt": "Say hi."}])
        out = self.path("out.jsonl")
        # One job at a time: the conversation's later turns run before the next prompt starts, so
        # the records come in prompt order.
        args = ["gen-data", "--prompts", prompts, "--threads", "2", "--parallel", "1", "--kv-dtype", "f32",
                "--temperature", "0", "--max-tokens", "12", "--out", out]
        r = dms(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("(turns 4/4)", r.stderr)
        self.assertEqual([x["id"] for x in read_jsonl(out)], ["doc", "one"])
        records = {x["id"]: x for x in read_jsonl(out)}
        messages = records["doc"]["messages"]
        self.assertEqual([m["role"] for m in messages], ["user", "assistant"] * 3)
        self.assertEqual([m["content"] for m in messages[0::2]], [doc["prompt"], *doc["parts"]])
        for k in (1, 3, 5):  # each reply: transformers' greedy reply to the conversation before it
            self.assertEqual(messages[k]["content"], Reference.reply(messages[:k], 12), k)
        self.assertTrue(3 <= records["doc"]["reply_tokens"] <= 36)
        self.assertEqual(len(records["one"]["messages"]), 2)
        r = dms(*args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2 already written, 0 to generate", r.stderr)

    def test_resume_skips_written_replies_and_equals_a_fresh_run(self):
        sampled = ["--temperature", "1.0", "--seed", "7", "--max-tokens", "12", "--samples", "2"]
        fresh, resumed = self.path("fresh.jsonl"), self.path("resumed.jsonl")
        self.run_ok(*sampled, "--out", fresh)
        self.run_ok(*sampled, "--limit", "2", "--out", resumed)
        with open(resumed, encoding="utf-8") as f:
            first_part = f.read()
        self.assertEqual(len(read_jsonl(resumed)), 4)
        r = self.run_ok(*sampled, "--out", resumed)
        self.assertIn("4 already written, 4 to generate", r.stderr)
        with open(resumed, encoding="utf-8") as f:
            self.assertTrue(f.read().startswith(first_part), "resuming rewrote what was there")
        self.assertEqual(by_key(read_jsonl(resumed)), by_key(read_jsonl(fresh)))
        samples = by_key(read_jsonl(fresh))
        self.assertNotEqual(samples[("sky", 0)]["seed"], samples[("sky", 1)]["seed"])

        before = os.path.getsize(resumed)
        r = self.run_ok(*sampled, "--out", resumed)
        self.assertIn("8 already written, 0 to generate", r.stderr)
        self.assertEqual(os.path.getsize(resumed), before)

    def test_an_unfinished_last_line_is_generated_again(self):
        args = ["--temperature", "0", "--seed", "3", "--max-tokens", "6"]
        out = self.path("out.jsonl")
        self.run_ok(*args, "--out", out)
        complete = read_jsonl(out)
        with open(out, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
        r = self.run_ok(*args, "--out", out)
        self.assertIn("unfinished last line", r.stderr)
        self.assertEqual(by_key(read_jsonl(out)), by_key(complete))

    def test_a_whole_last_reply_without_its_newline_is_kept(self):
        args = ["--temperature", "0", "--seed", "3", "--max-tokens", "6"]
        out = self.path("out.jsonl")
        self.run_ok(*args, "--out", out)
        with open(out, encoding="utf-8") as f:
            complete = f.read()
        with open(out, "w", encoding="utf-8") as f:
            f.write(complete[:-1])
        r = self.run_ok(*args, "--out", out)
        self.assertIn("the last reply lacked its newline", r.stderr)
        self.assertIn(f"{len(complete.splitlines())} already written, 0 to generate", r.stderr)
        with open(out, encoding="utf-8") as f:
            self.assertEqual(f.read(), complete)

    def test_held_out_prompts_go_to_their_own_file_by_the_documented_hash(self):
        ids = [f"p{i}" for i in range(10)]
        expected = {i for i in ids if held_out(i, 0.4)}
        self.assertTrue(0 < len(expected) < len(ids), "the ids no longer fall on both sides")
        write_jsonl(self.prompts, [{"id": i, "prompt": f"Say the number {n}."} for n, i in enumerate(ids)])
        out, held = self.path("train.jsonl"), self.path("heldout.jsonl")
        self.run_ok("--temperature", "0", "--max-tokens", "2", "--heldout-fraction", "0.4", "--heldout", held,
                    "--out", out)
        self.assertEqual({r["id"] for r in read_jsonl(held)}, expected)
        self.assertEqual({r["id"] for r in read_jsonl(out)}, set(ids) - expected)

    def test_the_shipped_prompt_set_is_varied_and_found_by_default(self):
        shipped = read_jsonl(os.path.join(ROOT, "data", "prompts.jsonl"))
        self.assertGreaterEqual(len(shipped), 300)
        self.assertEqual(len({p["id"] for p in shipped}), len(shipped))
        self.assertEqual(len({p["prompt"] for p in shipped}), len(shipped))
        self.assertGreaterEqual(len({p["category"] for p in shipped}), 10)
        self.assertTrue(all(p["prompt"].strip() for p in shipped))
        out = self.path("shipped.jsonl")
        r = dms("gen-data", *FAST, "--temperature", "0", "--max-tokens", "2", "--limit", "3", "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([x["id"] for x in sorted(read_jsonl(out), key=lambda x: x["id"])],
                         sorted(p["id"] for p in shipped[:3]))


    def test_the_shipped_long_prompts_are_six_part_conversations(self):
        path = os.path.join(ROOT, "data", "long-prompts.jsonl")
        shipped = read_jsonl(path)
        self.assertGreaterEqual(len(shipped), 40)
        self.assertEqual(len({p["id"] for p in shipped}), len(shipped))
        self.assertEqual(len({p["prompt"] for p in shipped}), len(shipped))
        self.assertTrue(all(len(p["parts"]) == 5 and all(x.strip() for x in p["parts"]) for p in shipped))
        out = self.path("long.jsonl")
        r = dms("gen-data", "--prompts", path, *FAST, "--temperature", "0", "--max-tokens", "2", "--limit", "2",
                "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([len(x["messages"]) for x in read_jsonl(out)], [12, 12])


class GenDataBadInput(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_help(self):
        r = dms("gen-data", "--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("usage: dms gen-data", r.stdout)
        self.assertIn("gen-data", dms("--help").stdout)

    def test_usage_errors_exit_2_and_name_the_option(self):
        out = self.path("o.jsonl")
        check_usage_errors(self, [
            ([], "--out"),
            (["--out", out, "--policy", "h2o"], "--policy"),
            (["--out", out, "--samples", "0"], "--samples"),
            (["--out", out, "--parallel", "0"], "--parallel"),
            (["--out", out, "--heldout-fraction", "0.5"], "--heldout"),
            (["--out", out, "--heldout-fraction", "1"], "--heldout-fraction"),
            (["--out", out, "--heldout-fraction", "0.2", "--heldout", out], "--heldout: must differ"),
            (["--out", out, "--limit", "0"], "--limit"),
        ], before=("gen-data",))

    def test_bad_prompt_files_and_outputs_exit_1_naming_file_and_line(self):
        good = json.dumps({"id": "a", "prompt": "hi"})
        cases = [
            ("malformed.jsonl", good + "\n{\"id\": \"b\", \"prompt\": \n", "malformed.jsonl:2: malformed JSON"),
            ("duplicate.jsonl", good + "\n" + good + "\n", "duplicate.jsonl:2: id 'a' appears twice"),
            ("no_prompt.jsonl", json.dumps({"id": "a"}) + "\n", "no_prompt.jsonl:1: 'prompt' is missing"),
            ("no_id.jsonl", json.dumps({"prompt": "hi"}) + "\n", "no_id.jsonl:1: 'id' is missing"),
            ("empty.jsonl", "", "empty.jsonl: empty file"),
            ("parts.jsonl", json.dumps({"id": "a", "prompt": "hi", "parts": "next"}) + "\n",
             "parts.jsonl:1: 'parts' must be a list of non-empty strings"),
            ("empty_part.jsonl", json.dumps({"id": "a", "prompt": "hi", "parts": ["next", ""]}) + "\n",
             "empty_part.jsonl:1: 'parts' must be a list of non-empty strings"),
        ]
        for name, content, message in cases:
            with open(self.path(name), "w") as f:
                f.write(content)
            r = dms("gen-data", "--prompts", self.path(name), "--out", self.path("o.jsonl"))
            self.assertEqual(r.returncode, 1, f"{name}: {r.stderr}")
            self.assertIn(message, r.stderr, name)
        r = dms("gen-data", "--prompts", self.path("absent.jsonl"), "--out", self.path("o.jsonl"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("absent.jsonl: cannot read", r.stderr)

        prompts = self.path("prompts.jsonl")
        with open(prompts, "w") as f:
            f.write(good + "\n")
        foreign = self.path("foreign.jsonl")
        with open(foreign, "w") as f:
            f.write(json.dumps({"text": "someone else's corpus"}) + "\n")
        r = dms("gen-data", "--prompts", prompts, "--out", foreign)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("foreign.jsonl:1: not a gen-data record", r.stderr)
        with open(foreign) as f:
            self.assertEqual(f.read(), json.dumps({"text": "someone else's corpus"}) + "\n", "the output was changed")

    def test_a_prompt_longer_than_the_context_is_refused_before_any_reply(self):
        prompts = self.path("long.jsonl")
        write_jsonl(prompts, [{"id": "short", "prompt": "hi"}, {"id": "huge", "prompt": "word " * 9000}])
        out = self.path("o.jsonl")
        r = dms("gen-data", "--prompts", prompts, "--threads", "2", "--parallel", "1", "--max-tokens", "2",
                "--out", out)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"long\.jsonl: prompt 'huge': \d+ tokens do not fit the model's context length of 8192")
        self.assertEqual(read_jsonl(out) if os.path.exists(out) else [], [], "a reply was generated before the error")

    def test_a_conversation_that_would_outgrow_the_context_is_refused_before_any_reply(self):
        # Each part fits on its own; together with the replies they do not.
        prompts = self.path("grows.jsonl")
        write_jsonl(prompts, [{"id": "short", "prompt": "hi"},
                              {"id": "grows", "prompt": "hi", "parts": ["word " * 3000] * 3}])
        out = self.path("o.jsonl")
        r = dms("gen-data", "--prompts", prompts, "--threads", "2", "--parallel", "1", "--max-tokens", "2",
                "--out", out)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"grows\.jsonl: prompt 'grows': its 4 turns with up to 2 tokens per reply may "
                                   r"reach about \d+ tokens, more than the model's context length of 8192")
        self.assertEqual(read_jsonl(out) if os.path.exists(out) else [], [], "a reply was generated before the error")


class ChainConversations(unittest.TestCase):
    """scripts/chain-conversations: every pair of the corpus lands in exactly one conversation, in
    pairs of --turns, the same for the same seed; a record without messages is an error naming
    the file and line."""

    def run_script(self, *args):
        return run([os.path.join(ROOT, "scripts", "chain-conversations"), *args])

    def test_chains_every_pair_once(self):
        with tempfile.TemporaryDirectory() as tmp:
            corpus = os.path.join(tmp, "corpus.jsonl")
            pairs = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
                     for i in range(11)]
            with open(corpus, "w") as f:
                for i, m in enumerate(pairs):
                    f.write(json.dumps({"id": i, "messages": m, "reply_tokens": 3}) + "\n")
            outs = []
            for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
                out = os.path.join(tmp, name + ".jsonl")
                r = self.run_script(corpus, out, "--turns", "4", "--seed", seed)
                self.assertEqual(r.returncode, 0, r.stderr)
                with open(out) as f:
                    outs.append([json.loads(line)["messages"] for line in f])
            a, b, c = outs
            self.assertEqual([len(m) for m in a], [8, 8, 6])
            chained = [m[i:i + 2] for m in a for i in range(0, len(m), 2)]
            self.assertEqual(sorted(json.dumps(p) for p in chained), sorted(json.dumps(p) for p in pairs))
            self.assertEqual(a, b)
            self.assertNotEqual(a, c)

            bad = os.path.join(tmp, "bad.jsonl")
            with open(bad, "w") as f:
                f.write(json.dumps({"messages": pairs[0]}) + "\n" + json.dumps({"text": "no messages"}) + "\n")
            r = self.run_script(bad, os.path.join(tmp, "d.jsonl"))
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("bad.jsonl:2", r.stderr)


class CollectDocs(unittest.TestCase):
    """scripts/collect-docs: the standard library's reference as pydoc renders it (checked against
    pydoc called here) and Debian's docs, every text within the size bounds and cut at a blank line,
    ids unique, no copyright or licence file, the same file from two runs; bad options refused."""

    def run_script(self, *args):
        return run([sys.executable, os.path.join(ROOT, "scripts", "collect-docs"), *args])

    def test_documents(self):
        import pydoc
        with tempfile.TemporaryDirectory() as tmp:
            paths = [os.path.join(tmp, n) for n in ("a.jsonl", "b.jsonl")]
            for path in paths:  # the environment never reaches the text (os.environ's values)
                r = run([sys.executable, os.path.join(ROOT, "scripts", "collect-docs"), path, "--min-chars", "3000",
                         "--max-chars", "20000"], env={**os.environ, "DMS_SECRET_TOKEN": "s3cr3t-" + path[-7]})
                self.assertEqual(r.returncode, 0, r.stderr)
            with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
                self.assertEqual(a.read(), b.read())
            records = read_jsonl(paths[0])
        self.assertFalse(any("s3cr3t" in r["text"] or "DMS_SECRET_TOKEN" in r["text"] for r in records))
        ids = [r["id"] for r in records]
        self.assertEqual(len(ids), len(set(ids)))
        by_id = {r["id"]: r for r in records}
        for r in records:
            self.assertEqual(r["chars"], len(r["text"]))
            self.assertTrue(3000 <= r["chars"] <= 20000, r["id"])
            self.assertEqual(r["source"], r["id"].split(":")[0])
            self.assertNotRegex(r["id"], r"(?i)copyright|licen[cs]e|copying")
        json_doc = pydoc.render_doc("json", renderer=pydoc.plaintext)
        json_doc = re.sub(r"^DATA\n(?:(?:[ \t].*)?\n)*", "", json_doc, flags=re.MULTILINE)  # no DATA section
        json_doc = re.sub(r" at 0x[0-9a-f]+", "", json_doc).strip()  # nor objects' addresses
        self.assertGreater(len(json_doc), 20000, "json's reference is cut in this test")
        got = by_id["python:json"]["text"]
        self.assertTrue(json_doc.startswith(got), "the module's reference, from its start")
        self.assertEqual(json_doc[len(got):len(got) + 2], "\n\n", "cut at a blank line")
        self.assertNotIn("python:antigravity", by_id)
        self.assertGreater(sum(r["source"] == "python" for r in records), 50)

    def test_heldout_split(self):
        """--heldout: the documents split between the two files by retrofit's stable hash of the id,
        the same lines in the same order as without the split."""
        with tempfile.TemporaryDirectory() as tmp:
            whole, train, held = (os.path.join(tmp, n) for n in ("whole.jsonl", "train.jsonl", "held.jsonl"))
            bounds = ["--sources", "python", "--min-chars", "3000", "--max-chars", "8000"]
            for args in ([whole], [train, "--heldout-fraction", "0.3", "--heldout", held]):
                r = self.run_script(*args, *bounds)
                self.assertEqual(r.returncode, 0, r.stderr)
            records, train_ids, held_ids = ([r["id"] for r in read_jsonl(p)] for p in (whole, train, held))
        expected = [i for i in records if (split_hash(i) >> 11) * 2.0 ** -53 < 0.3]
        self.assertGreater(len(expected), 5)
        self.assertEqual(held_ids, expected)
        self.assertEqual(train_ids, [i for i in records if i not in set(expected)])

    def test_bad_options(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "o.jsonl")
            for args in (["--heldout", os.path.join(tmp, "h.jsonl")], ["--heldout-fraction", "0.1"],
                         ["--heldout-fraction", "1", "--heldout", os.path.join(tmp, "h.jsonl")],
                         ["--heldout-fraction", "0.1", "--heldout", out]):
                r = self.run_script(out, "--sources", "python", *args)
                self.assertNotEqual(r.returncode, 0, args)
                self.assertIn("--heldout", r.stderr)
                self.assertFalse(os.path.exists(out), args)
            r = self.run_script(out, "--sources", "python,manpages")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("unknown source 'manpages'", r.stderr)
            r = self.run_script(out, "--min-chars", "500", "--max-chars", "100")
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("--min-chars <= --max-chars", r.stderr)


if __name__ == "__main__":
    unittest.main()
