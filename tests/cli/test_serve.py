"""End-to-end tests of `dms serve` on the default model, driven by the official `openai` client.

References are independent of the server: `dms generate` gives the greedy text a request must
reproduce; transformers' tokenizer (read from the same GGUF) gives the token counts `usage` must
report; the error cases check status, OpenAI's error shape and the field named.

Run: python tests/cli/test_serve.py  (env: DMS_BIN = the dms binary, DMS_DEFAULT_MODEL = the GGUF)
"""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DMS, dms_ok, transformers_gguf  # noqa: E402

MODEL = os.environ["DMS_DEFAULT_MODEL"]
NAME = os.path.basename(MODEL)
KEY = "test-key"
QUESTION = "What is the capital of France? Answer in one sentence."
STORY = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


class Server:
    """A `dms serve` on a free loopback port (--port 0; the port is read from its start-up line),
    its log in a temporary file."""

    def __init__(self, *args):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="dms-serve-", suffix=".log")
        self.proc = subprocess.Popen([DMS, "serve", "--port", "0", "--threads", "2", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 120
        while True:
            m = re.search(r"serving '.*' on http://127\.0\.0\.1:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None or time.time() > deadline:
                raise AssertionError(f"dms serve did not start:\n{self.text()}")
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{self.port}"

    def text(self):
        """Its log so far (all of it once stopped)."""
        if self.log.closed:
            return self.final_log
        with open(self.log.name, encoding="utf-8") as f:
            return f.read()

    def client(self, key=KEY):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300)

    def request(self, method, path, body=None, content=None, key=KEY):
        """A raw HTTP request (body: JSON-encoded; content: bytes as they are), to see statuses,
        headers and bodies as any client would."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = content if content is not None else None if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return Response(r.status, dict(r.getheaders()), r.read().decode())
        finally:
            conn.close()

    def post(self, path, body=None, content=None, key=KEY):
        return self.request("POST", path, body, content, key)

    def get(self, path):
        return self.request("GET", path)

    def metrics(self):
        """GET /metrics parsed as Prometheus text: {(name, labels): value}; also checks every
        sample's metric has # HELP and # TYPE lines before it."""
        r = self.get("/metrics")
        assert r.status_code == 200, r.text
        typed, samples = set(), {}
        for line in r.text.splitlines():
            if line.startswith("# TYPE "):
                typed.add(line.split()[2])
                continue
            if line.startswith("#") or not line:
                continue
            m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
            assert m, f"not Prometheus text: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in typed or base in typed, f"{name} has no # TYPE line"
            samples[(name, labels)] = value
        return samples

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.final_log = self.text()
            self.log.close()


class Response:
    def __init__(self, status_code, headers, text):
        self.status_code, self.headers, self.text = status_code, headers, text

    def json(self):
        return json.loads(self.text)


def wait_until(condition, timeout=30, what="condition"):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def story_stream(server, max_tokens):
    """A greedy streamed completion of STORY that runs to max_tokens."""
    return server.client().completions.create(model=NAME, prompt=STORY, max_tokens=max_tokens, temperature=0,
                                              stream=True, extra_body={"ignore_eos": True})


def chat(client, content, **kw):
    return client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": content}], **kw)


class ServeTest(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server("--api-key", KEY, "--kv-budget", "64MiB", "--max-running", "16", "--step-tokens", "16")
        cls.client = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        if cls.server:
            assert cls.server.stop() == 0, cls.server.text()

    # --- what the server answers -------------------------------------------------------------

    def test_chat_greedy_equals_dms_generate(self):
        r = chat(self.client, QUESTION, max_tokens=24, temperature=0)
        ref = dms_ok("generate", "--chat", "--temperature", "0", "--max-tokens", "24", "--threads", "2", QUESTION)
        self.assertEqual(r.choices[0].message.content, ref.stdout.rstrip("\n"))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.model, NAME)
        self.assertTrue(r.id.startswith("chatcmpl-"))

    def test_completion_greedy_equals_dms_generate(self):
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=20, temperature=0)
        ref = dms_ok("generate", "--temperature", "0", "--max-tokens", "20", "--threads", "2", STORY)
        self.assertEqual(r.choices[0].text, ref.stdout.rstrip("\n"))
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.completion_tokens, 20)

    def test_stream_is_the_whole_answer_in_pieces(self):
        whole = chat(self.client, QUESTION, max_tokens=24, temperature=0)
        chunks = list(chat(self.client, QUESTION, max_tokens=24, temperature=0, stream=True,
                           stream_options={"include_usage": True}))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, whole.choices[0].message.content)
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        self.assertEqual(finishes, [whole.choices[0].finish_reason])
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.model_dump(), whole.usage.model_dump())
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))

    def test_completion_stream_without_usage(self):
        chunks = list(self.client.completions.create(model=NAME, prompt=STORY, max_tokens=12, temperature=0,
                                                     stream=True))
        whole = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=12, temperature=0)
        self.assertEqual("".join(c.choices[0].text for c in chunks), whole.choices[0].text)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")
        self.assertTrue(all(c.usage is None for c in chunks))

    def test_usage_counts_the_tokenizers_tokens(self):
        tok, _ = transformers_gguf(MODEL)
        messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": QUESTION}]
        r = self.client.chat.completions.create(model=NAME, messages=messages, max_tokens=5, temperature=0,
                                                extra_body={"ignore_eos": True})
        rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected = len(tok(rendered, add_special_tokens=False).input_ids)
        self.assertEqual(r.usage.prompt_tokens, expected)
        self.assertEqual(r.usage.completion_tokens, 5)
        self.assertEqual(r.usage.total_tokens, expected + 5)
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=3, temperature=0)
        self.assertEqual(r.usage.prompt_tokens, len(tok(STORY).input_ids))
        t = self.server.post("/tokenize", {"prompt": STORY}).json()
        self.assertEqual(t["tokens"], tok(STORY).input_ids)
        self.assertEqual(t["count"], len(t["tokens"]))
        d = self.server.post("/detokenize", {"tokens": t["tokens"]}).json()
        self.assertEqual(d["prompt"], tok.decode(t["tokens"]))
        t = self.server.post("/tokenize", {"messages": messages}).json()
        self.assertEqual(t["count"], expected)

    def test_seeded_sampling_repeats(self):
        kw = dict(max_tokens=24, temperature=1.0, top_p=0.95, seed=1234)
        a = chat(self.client, "Write a line about the sea.", **kw).choices[0].message.content
        b = chat(self.client, "Write a line about the sea.", **kw).choices[0].message.content
        self.assertEqual(a, b)

    def test_n_choices_sample_independently(self):
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=16, temperature=1.0, n=3, seed=7,
                                           extra_body={"ignore_eos": True})
        self.assertEqual([c.index for c in r.choices], [0, 1, 2])
        self.assertEqual(r.usage.completion_tokens, 48)
        # Three 16-token samples at temperature 1 that all agree would mean one seed for all.
        self.assertGreater(len({c.text for c in r.choices}), 1)
        # The choices share one prefill; each is what its seed gives in a run of its own (prefilled
        # in the server's chunks, so that the same rows go through the same kernels).
        for c in r.choices:
            ref = dms_ok("generate", "--temperature", "1.0", "--top-p", "1", "--min-p", "0", "--seed", str(7 + c.index),
                         "--max-tokens", "16", "--ignore-eos", "--step-tokens", "16", "--threads", "2", STORY)
            self.assertEqual(c.text, ref.stdout[:-1], c.index)  # generate ends its output with one newline
        streamed = {}
        for c in self.client.completions.create(model=NAME, prompt=STORY, max_tokens=16, temperature=1.0, n=3,
                                                seed=7, stream=True, extra_body={"ignore_eos": True}):
            streamed[c.choices[0].index] = streamed.get(c.choices[0].index, "") + c.choices[0].text
        self.assertEqual(streamed, {c.index: c.text for c in r.choices})

    def test_a_repeated_prefix_is_not_run_again(self):
        system = "You are a careful assistant. Answer in one short sentence, and name the country. " * 3
        ask = lambda q: self.client.chat.completions.create(  # noqa: E731
            model=NAME, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}],
            max_tokens=12, temperature=0)
        before = self.server.metrics()
        first = ask("What is the capital of Peru?")
        again = ask("What is the capital of Peru?")
        other = ask("What is the capital of Chile?")
        after = self.server.metrics()
        # The same prompt again runs nothing and answers the same; another question on the same
        # system message runs only what follows it (a prefill chunk ended where it ends).
        self.assertEqual(again.choices[0].message.content, first.choices[0].message.content)
        self.assertEqual(again.usage.prompt_tokens_details.cached_tokens, again.usage.prompt_tokens)
        tok, _ = transformers_gguf(MODEL)
        rendered = tok.apply_chat_template([{"role": "system", "content": system}], tokenize=False)
        self.assertEqual(other.usage.prompt_tokens_details.cached_tokens,
                         len(tok(rendered, add_special_tokens=False).input_ids))
        hits = after[("dms_prefix_cache_hit_tokens_total", "")] - before.get(("dms_prefix_cache_hit_tokens_total", ""), 0)
        self.assertEqual(hits, sum(r.usage.prompt_tokens_details.cached_tokens for r in (first, again, other)))
        # What a run without the cache gives.
        ref = dms_ok("generate", "--temperature", "0", "--max-tokens", "12", "--threads", "2", "--chat",
                     "--system", system, "What is the capital of Chile?")
        self.assertEqual(other.choices[0].message.content, ref.stdout.rstrip("\n"))

    def test_stop_strings(self):
        full = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=24, temperature=0).choices[0].text
        words = full.split()
        stop = words[len(words) // 2]
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=24, temperature=0, stop=[stop, "zzz"])
        self.assertEqual(r.choices[0].finish_reason, "stop")
        self.assertEqual(r.choices[0].text, full[:full.index(stop)])
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=24, temperature=0, stop=stop)
        self.assertEqual(r.choices[0].text, full[:full.index(stop)])

    def test_models_health_and_metrics(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [NAME])
        self.assertEqual(self.server.get("/health").json(), {"status": "ok"})
        before = self.server.metrics()
        r = self.client.completions.create(model=NAME, prompt=STORY, max_tokens=7, temperature=0,
                                           extra_body={"ignore_eos": True})
        after = self.server.metrics()
        delta = lambda name, labels="": after[(name, labels)] - before.get((name, labels), 0)  # noqa: E731
        self.assertEqual(delta("dms_generation_tokens_total"), 7)
        self.assertEqual(delta("dms_prompt_tokens_total"), r.usage.prompt_tokens)
        self.assertEqual(delta("dms_requests_received_total"), 1)
        self.assertEqual(delta("dms_requests_finished_total", '{finish_reason="length"}'), 1)
        self.assertEqual(delta("dms_time_to_first_token_seconds_count"), 1)
        self.assertEqual(delta("dms_inter_token_latency_seconds_count"), 6)
        self.assertEqual(delta("dms_request_latency_seconds_count"), 1)
        finished = sum(v for (n, _), v in after.items() if n == "dms_requests_finished_total")
        self.assertEqual(after[("dms_requests_received_total", "")],
                         finished + after[("dms_requests_aborted_total", "")] +
                         after[("dms_requests_running", "")] + after[("dms_requests_waiting", "")])
        # Idle, the cache holds only what the prefix cache keeps: nothing leaked.
        self.assertGreater(after[("dms_prefix_cache_entries", "")], 0)
        self.assertEqual(after[("dms_kv_blocks_used", "")], after[("dms_prefix_cache_blocks", "")])
        self.assertGreater(after[("dms_kv_blocks_total", "")], 0)
        self.assertGreater(after[("dms_kv_bytes_held_peak", "")], 0)
        self.assertGreater(after[("dms_evicted_keys_total", "")], 0, "the DMS adapter evicts")

    # --- errors ------------------------------------------------------------------------------

    def check_error(self, response, status, param=None, words=""):
        self.assertEqual(response.status_code, status, response.text)
        err = response.json()["error"]
        self.assertIsInstance(err["message"], str)
        self.assertIn(words, err["message"])
        self.assertEqual(err["param"], param, err)
        self.assertIn("type", err)

    def test_bad_requests_are_400_naming_the_field(self):
        chat_path, cmpl = "/v1/chat/completions", "/v1/completions"
        msgs = [{"role": "user", "content": "hi"}]
        s = self.server
        self.check_error(s.post(chat_path, content=b'{"messages": [', ), 400, None, "not valid JSON")
        self.check_error(s.post(chat_path, content=b'[1, 2]'), 400, None, "JSON object")
        self.check_error(s.post(chat_path, {"model": NAME}), 400, "messages", "required")
        self.check_error(s.post(cmpl, {"model": NAME}), 400, "prompt", "required")
        self.check_error(s.post(chat_path, {"messages": "hi"}), 400, "messages", "got string")
        self.check_error(s.post(chat_path, {"messages": [{"role": "user"}]}), 400, "messages[0].content", "required")
        self.check_error(s.post(chat_path, {"messages": [{"role": "tool", "content": "x"}]}), 400, "messages[0].role")
        self.check_error(s.post(chat_path, {"messages": msgs, "max_tokens": 0}), 400, "max_tokens", "at least 1")
        self.check_error(s.post(chat_path, {"messages": msgs, "max_tokens": "ten"}), 400, "max_tokens", "integer")
        self.check_error(s.post(chat_path, {"messages": msgs, "temperature": 3}), 400, "temperature")
        self.check_error(s.post(chat_path, {"messages": msgs, "top_p": 0}), 400, "top_p")
        self.check_error(s.post(chat_path, {"messages": msgs, "stream": "yes"}), 400, "stream", "boolean")
        self.check_error(s.post(chat_path, {"messages": msgs, "stop": 3}), 400, "stop")
        self.check_error(s.post(chat_path, {"messages": msgs, "n": 0}), 400, "n")
        self.check_error(s.post(chat_path, {"messages": msgs, "logprobs": True}), 400, "logprobs", "not supported")
        self.check_error(s.post(chat_path, {"messages": msgs, "stream_options": {"include_usage": True}}), 400,
                         "stream_options")
        self.check_error(s.post(cmpl, {"prompt": ["a", "b"]}), 400, "prompt", "batch")
        self.check_error(s.post(cmpl, {"prompt": [1, 2, 10**7]}), 400, "prompt[2]", "vocabulary")
        self.check_error(s.post("/detokenize", {"tokens": [-1]}), 400, "tokens[0]", "vocabulary")
        long_prompt = "hello " * 9000
        self.check_error(s.post(cmpl, {"prompt": long_prompt, "max_tokens": 4}), 400, "prompt", "context length")
        self.check_error(s.post(cmpl, {"prompt": STORY, "max_tokens": 8190}), 400, "max_tokens", "context length")
        # Unknown fields are ignored; fields set to their "off" value pass.
        ok = s.post(chat_path, {"messages": msgs, "max_tokens": 2, "frobnicate": 1, "logprobs": False,
                                "presence_penalty": 0, "user": "u"})
        self.assertEqual(ok.status_code, 200, ok.text)
        # The openai client raises its own error type with our message.
        with self.assertRaises(openai.BadRequestError) as e:
            chat(self.client, "hi", max_tokens=0)
        self.assertIn("max_tokens", str(e.exception))

    def test_unknown_model_key_path_and_body_size(self):
        s = self.server
        msgs = [{"role": "user", "content": "hi"}]
        self.check_error(s.post("/v1/chat/completions", {"model": "gpt-9", "messages": msgs}), 404, "model", "gpt-9")
        self.check_error(s.post("/v1/chat/completions", {"messages": msgs}, key=None), 401, None, "missing API key")
        self.check_error(s.post("/v1/chat/completions", {"messages": msgs}, key="wrong"), 401, None, "invalid API key")
        with self.assertRaises(openai.AuthenticationError):
            self.server.client(key="wrong").models.list()
        self.check_error(s.post("/v1/nothing", {}), 404, None, "/v1/nothing")
        big = json.dumps({"messages": [{"role": "user", "content": "x" * (5 << 20)}]}).encode()
        self.check_error(s.post("/v1/chat/completions", content=big), 413, None, "larger than")
        self.assertEqual(s.get("/health").status_code, 200, "the server survived")

    # --- many clients at once ----------------------------------------------------------------

    def test_concurrent_streams_with_disconnects(self):
        """32 streaming clients at once (16 run, 16 queue), every fourth closing its stream after two
        chunks: the others get the text each prompt gets alone, and when all is done nothing holds
        a block. The step takes at most 16 rows, so the quantized matmuls stay on their batch-
        invariant decode path and greedy text cannot depend on the company a sequence keeps."""
        prompts = [f"Write a short note number {i} about {topic}." for i, topic in
                   enumerate(["rivers", "bread", "owls", "trains", "snow", "copper", "violins", "moss"])]
        kw = dict(max_tokens=24, temperature=0, extra_body={"ignore_eos": True})
        alone = {p: chat(self.client, p, **kw).choices[0].message.content for p in prompts}
        before = self.server.metrics()
        results, errors = {}, []

        def client(i):
            p = prompts[i % len(prompts)]
            try:
                stream = chat(self.server.client(), p, stream=True, **kw)
                text, chunks = "", 0
                for c in stream:
                    if c.choices:
                        text += c.choices[0].delta.content or ""
                        chunks += 1
                    if i % 4 == 3 and chunks == 3:
                        stream.close()
                        return
                results[i] = (p, text)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"client {i}: {e!r}")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 24)
        for i, (p, text) in results.items():
            self.assertEqual(text, alone[p], f"client {i}")
        wait_until(lambda: self.server.metrics()[("dms_requests_running", "")] == 0, what="idle")
        after = self.server.metrics()
        # Idle, the cache holds only what the prefix cache keeps: nothing leaked.
        self.assertGreater(after[("dms_prefix_cache_entries", "")], 0)
        self.assertEqual(after[("dms_kv_blocks_used", "")], after[("dms_prefix_cache_blocks", "")])
        self.assertEqual(after[("dms_requests_waiting", "")], 0)
        self.assertEqual(after[("dms_requests_aborted_total", "")] - before.get(("dms_requests_aborted_total", ""), 0), 8)
        # The completed streams' tokens, and between 2 and 24 for each closed one.
        generated = after[("dms_generation_tokens_total", "")] - before[("dms_generation_tokens_total", "")]
        self.assertGreaterEqual(generated, 24 * 24 + 8 * 2)
        self.assertLessEqual(generated, 32 * 24)

    def test_a_burst_of_connections_waits_for_the_server(self):
        """64 clients connect at once while the server is stopped (SIGSTOP): the kernel completes
        every handshake for it (httplib alone would listen with a backlog of 5, and drop the rest),
        and once the server goes on, each request gets its answer."""
        s, conns = self.server, []
        s.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(64):
                try:
                    conns.append(socket.create_connection(("127.0.0.1", s.port), timeout=3))
                except OSError as e:
                    self.fail(f"connection {i} while the server is stopped: {e!r}")
                conns[-1].sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        finally:
            s.proc.send_signal(signal.SIGCONT)
        for i, c in enumerate(conns):
            with c:
                c.settimeout(60)
                answer = b""
                while chunk := c.recv(4096):
                    answer += chunk
                self.assertTrue(answer.startswith(b"HTTP/1.1 200"), f"connection {i}: {answer[:80]!r}")

    def test_port_of_a_running_server_is_refused(self):
        r = subprocess.run([DMS, "serve", "--port", str(self.server.port)], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"--port {self.server.port}", r.stderr)
        self.assertIn("in use", r.stderr)
        self.assertEqual(self.server.get("/health").status_code, 200, "the running server goes on")
        # Refused before the model loads: a model that does not exist is not reached.
        r = subprocess.run([DMS, "serve", "--port", str(self.server.port), "--model", "/nonexistent/model.gguf"],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"--port {self.server.port}: cannot listen on 127.0.0.1:{self.server.port} "
                      "(Address already in use)", r.stderr)
        self.assertNotIn("nonexistent", r.stderr)

class ServeLimitsTest(unittest.TestCase):
    def test_full_queue_is_503_with_retry_after(self):
        s = Server("--max-running", "1", "--max-queue", "0", "--kv-budget", "16MiB")
        try:
            first = threading.Thread(target=lambda: s.post("/v1/completions", {"prompt": STORY, "max_tokens": 200,
                                                                               "ignore_eos": True}))
            first.start()
            wait_until(lambda: s.metrics()[("dms_requests_running", "")] == 1, what="the first request to run")
            r = s.post("/v1/completions", {"prompt": STORY, "max_tokens": 4})
            self.assertEqual(r.status_code, 503, r.text)
            self.assertEqual(r.headers.get("Retry-After"), "1")
            self.assertIn("queue is full", r.json()["error"]["message"])
            self.assertEqual(s.metrics()[("dms_requests_rejected_total", '{status="503"}')], 1)
            first.join(timeout=300)
        finally:
            self.assertEqual(s.stop(), 0, s.text())

    def test_sigterm_ends_streams_cleanly_and_exits_0(self):
        s = Server("--shutdown-grace", "0")
        stream = story_stream(s, 2000)
        chunks = []
        for c in stream:
            chunks.append(c)
            if len(chunks) == 3:
                s.proc.send_signal(signal.SIGTERM)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "abort")
        self.assertLess(len(chunks), 2000)
        self.assertEqual(s.stop(), 0, s.text())
        self.assertIn("serve: stopped", s.text())

    def test_sigint_lets_running_requests_finish_within_the_grace(self):
        s = Server("--shutdown-grace", "60")
        stream = story_stream(s, 30)
        chunks = []
        for c in stream:
            chunks.append(c)
            if len(chunks) == 2:
                s.proc.send_signal(signal.SIGINT)
                wait_until(lambda: "refusing new requests" in s.text(), what="the drain")
                r = s.post("/v1/completions", {"prompt": STORY, "max_tokens": 2})
                self.assertEqual(r.status_code, 503, r.text)
                self.assertEqual(s.get("/health").status_code, 503)
        self.assertEqual(chunks[-1].choices[0].finish_reason, "length")
        self.assertEqual(sum(1 for c in chunks if c.choices[0].text), 30)
        self.assertEqual(s.stop(), 0, s.text())

    def test_timeout_gives_up_on_a_request_that_does_not_come(self):
        def half_request(port):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the headers never end
            return c

        def answered_within(c, seconds):  # an answer (httplib's 400 at the timeout) or a close
            c.settimeout(seconds)
            try:
                c.recv(1, socket.MSG_PEEK)  # left in the socket for read_answer
                return True
            except socket.timeout:
                return False

        def read_answer(c):  # status line and headers, and the body by its Content-Length
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(65536)
                self.assertTrue(chunk, f"closed before the answer ended: {data!r}")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            while len(body) < length:
                body += c.recv(65536)
            return head.decode(), json.loads(body)

        s = Server("--timeout", "2")
        try:
            with half_request(s.port) as c:
                self.assertFalse(answered_within(c, 1.0))  # still waiting at 1 s
                self.assertTrue(answered_within(c, 5.0))   # given up at about 2 s
                head, body = read_answer(c)
                self.assertTrue(head.startswith("HTTP/1.1 400"), head)
                self.assertIn("not received within --timeout 2 s", body["error"]["message"])
            with socket.create_connection(("127.0.0.1", s.port)) as c:  # not HTTP at all
                c.sendall(b"NONSENSE\r\n\r\n")
                head, body = read_answer(c)
                self.assertTrue(head.startswith("HTTP/1.1 400"), head)
                self.assertIn("the request could not be read: malformed", body["error"]["message"])
        finally:
            self.assertEqual(s.stop(), 0, s.text())
        s = Server()  # the default (600 s): a request sent slowly over 7 s is answered
        try:
            with half_request(s.port) as c:
                self.assertFalse(answered_within(c, 7.0))
                c.sendall(b"\r\n")
                c.settimeout(30)
                self.assertTrue(c.recv(64).startswith(b"HTTP/1.1 200"))
        finally:
            self.assertEqual(s.stop(), 0, s.text())

    def test_usage_errors(self):
        for args, words in [(["--port", "70000"], "--port"), (["--max-running", "0"], "--max-running"),
                            (["--api-key", ""], "--api-key"), (["--max-body", "lots"], "--max-body"),
                            (["--timeout", "0"], "--timeout")]:
            r = subprocess.run([DMS, "serve", *args], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(words, r.stderr)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            r = subprocess.run([DMS, "serve", "--port", str(taken.getsockname()[1])], capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("--port", r.stderr)


if __name__ == "__main__":
    unittest.main()
