"""What the end-to-end tests of the `dms` command line (tests/cli/test_*.py) share.

A test file imports it as `common` after putting its own folder first on sys.path (which is also
where Python looks first for `python tests/cli/test_x.py`, the way ctest runs them):

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common

Environment: DMS_BIN = the dms binary (default build/dms); DMS_FIXTURES = the fixture folder, read
by fixture() when a test asks for one.
"""
import json
import os
import socket
import subprocess

DMS = os.environ.get("DMS_BIN", "build/dms")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository

# The one timeout rule: a command these tests run (dms or a script) may take up to 10 minutes, the
# longest any of the tests allowed one before they shared this module; past it, the call raises
# subprocess.TimeoutExpired and the test errs.
TIMEOUT = 600


def run(argv, stdin=None, env=None, timeout=TIMEOUT):
    """argv run to its end: its exit status, stdout and stderr as text. env: the whole environment
    of the command (None: this process's)."""
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def dms(*args, stdin=None, env=None):
    """`dms args...` run to its end, under the one timeout rule."""
    return run([DMS, *args], stdin=stdin, env=env)


def dms_ok(*args):
    """`dms args...` that must succeed: an AssertionError with its output where it does not."""
    r = dms(*args)
    if r.returncode != 0:
        raise AssertionError(f"dms {args[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def check_usage_errors(test, cases, before=(), after=()):
    """Each (args, words) of cases: `dms before... args... after...` exits 2 with words (the option
    or the problem it names) in its stderr."""
    for args, words in cases:
        r = dms(*before, *args, *after)
        test.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
        test.assertIn(words, r.stderr, args)


def run_once(compute):
    """compute computed once per module run (per arguments, which must be hashable): its first call
    runs it, every later call with the same arguments returns that result, shared between the test
    cases. A call that raises leaves nothing behind: the next call computes again."""
    results = {}

    def get(*args):
        if args not in results:
            results[args] = compute(*args)
        return results[args]

    get.__name__, get.__doc__ = compute.__name__, compute.__doc__
    return get


def fixture(*parts):
    """A path inside $DMS_FIXTURES."""
    return os.path.join(os.environ["DMS_FIXTURES"], *parts)


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_log(out):
    """The records of log.jsonl in a `dms retrofit` output folder."""
    return read_jsonl(os.path.join(out, "log.jsonl"))


def steps_of(log, keys=None):
    """The step records of a retrofit log; with keys, each cut to those members."""
    steps = [r for r in log if r["type"] == "step"]
    return steps if keys is None else [{k: r[k] for k in keys} for r in steps]


def cuda_devices():
    """How many CUDA devices the venv's torch sees here (0 without a GPU or driver)."""
    import torch
    return torch.cuda.device_count()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@run_once
def transformers_gguf(path):
    """(tokenizer, model): transformers' reading of a GGUF file (its own loader, dequantized to
    fp32), the reference the tests compare dms with; loaded once."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    return tok, model
