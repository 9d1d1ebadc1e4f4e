"""Seed corpora for the fuzz targets (scripts/fuzz runs this): small valid inputs of every format,
taken from the test fixtures (tests/reference/make_*.py) where they exist and made here otherwise.

    python fuzz/make_seeds.py OUT_DIR [FIXTURES_DIR]

Writes OUT_DIR/<target>/<name>. Inputs that hold several files join them with the separator line
of fuzz/fuzz_common.h.
"""
import json
import pathlib
import random
import shutil
import sys

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SEP = b"\n--8<--\n"
MAX_SEED = 150_000  # bytes; bigger fixtures would slow every execution of their mutants

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def put(out: pathlib.Path, target: str, name: str, data: bytes) -> None:
    (out / target).mkdir(parents=True, exist_ok=True)
    (out / target / name).write_bytes(data)


def small_files(root: pathlib.Path, pattern: str):
    return sorted(p for p in root.glob(pattern) if p.is_file() and p.stat().st_size <= MAX_SEED)


def tiny_tokenizer() -> tuple[bytes, bytes]:
    """A byte-level BPE of a few hundred tokens with ChatML special tokens, and its config."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = ["The quick brown fox jumps over the lazy dog. 0123456789 ", "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f600"] * 50
    tok.train_from_iterator(text, trainer)
    config = {"add_bos_token": False, "bos_token": None, "eos_token": "<|im_end|>", "chat_template": CHATML}
    return tok.to_str().encode(), json.dumps(config).encode()


def adapter_for_qwen2_base() -> bytes:
    """A valid DMS adapter for fuzz/adapter.cpp's base (qwen2, hidden 8, 2 layers, 2 heads, 1 KV head)."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(2):
        p = f"model.layers.{i}.self_attn.dms_proj_alpha"
        tensors[p + "_norm.weight"] = torch.randn(8, generator=g)
        tensors[p + ".weight"] = torch.randn(1, 8, generator=g).to(torch.bfloat16)
        tensors[p + ".bias"] = torch.randn(1, generator=g).to(torch.float16)
    metadata = {
        "format": "dms-adapter", "version": "1",
        "dms_config": json.dumps({"dms_separate_alpha": True, "dms_alpha_scale": 100.0, "dms_initial_alpha_offset": 5.0,
                                  "dms_window_size": 16, "dms_alpha_per": "head"}),
        "base_model": json.dumps({"architecture": "qwen2", "hidden_size": 8, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4,
                                  "attention_bias": True}),
    }
    path = pathlib.Path("/tmp/dms-fuzz-adapter.safetensors")
    save_file(tensors, str(path), metadata=metadata)
    data = path.read_bytes()
    path.unlink()
    return data


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    fixtures = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else None
    if out.exists():
        shutil.rmtree(out)
    rng = random.Random(0)

    # ggml_blocks: the type byte, then two blocks of random bytes (scales included).
    for t in GGMLQuantizationType:
        block_elems, block_bytes = GGML_QUANT_SIZES[t]
        put(out, "ggml_blocks", t.name, bytes([t.value]) + rng.randbytes(2 * block_bytes))

    tok_json, tok_config = tiny_tokenizer()
    put(out, "tokenizer", "tiny_bpe", tok_json + SEP + tok_config + SEP + "H\u00e9llo <|im_start|>user\nhi".encode())
    put(out, "adapter", "qwen2_base", adapter_for_qwen2_base())

    put(out, "data", "records.jsonl", b"\n".join(json.dumps(r).encode() for r in [
        {"text": "Hello there."},
        {"id": 7, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello!"}]},
        {"id": "doc-2", "text": "caf\u00e9 \u65e5\u672c", "extra": [1, 2.5, None, True]},
    ]) + b"\n\n")
    put(out, "data", "tasks.jsonl", b"\n".join(json.dumps(r).encode() for r in [
        {"id": "a", "family": "arithmetic", "level": 1, "split": "test", "question": "What is 7 + 5?", "answer": "12"},
        {"id": "b", "family": "ordering", "level": 2, "question": "Who?", "answer": "Ben", "choices": ["Anna", "Ben"]},
    ]) + b"\nSo 7 + 5 = 12. The answer is: **1,200.0** \\boxed{Ben}\n#### 3\n")
    for i, body in enumerate([
        {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0.7,
         "top_p": 0.9, "stop": ["\n"], "stream": True, "stream_options": {"include_usage": True}, "seed": 3},
        {"prompt": "Once upon a time", "max_tokens": 4, "n": 2, "top_k": 5, "min_p": 0.1, "ignore_eos": True},
        {"prompt": [1, 2, 3], "max_tokens": 2},
        {"tokens": [1, 2, 3]},
        {"prompt": "x", "add_special_tokens": False},
    ]):
        put(out, "server_request", f"body{i}.json", json.dumps(body).encode())
    put(out, "chat_template", "chatml", CHATML.encode() + SEP + json.dumps([{"role": "user", "content": "Hi"}]).encode())
    put(out, "config", "llama", json.dumps({"model_type": "llama", "vocab_size": 64, "hidden_size": 8,
                                            "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                            "num_key_value_heads": 1, "rope_theta": 10000.0, "eos_token_id": [1, 2],
                                            "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
                                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                             "original_max_position_embeddings": 64}}).encode()
        + SEP + json.dumps({"eos_token_id": 3}).encode())

    if fixtures is None or not fixtures.is_dir():
        return
    for p in small_files(fixtures, "models/*.gguf") + small_files(fixtures, "tokenizers/**/*.gguf"):
        put(out, "gguf", p.relative_to(fixtures).as_posix().replace("/", "_"), p.read_bytes())
    for p in small_files(fixtures, "formats/**/*.safetensors"):
        put(out, "safetensors", p.relative_to(fixtures).as_posix().replace("/", "_"), p.read_bytes())
    index = fixtures / "formats/sharded/model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        put(out, "safetensors", "sharded", SEP.join([index.read_bytes()] + [(index.parent / s).read_bytes() for s in shards]))
    for p in small_files(fixtures, "**/config.json"):
        gen = p.parent / "generation_config.json"
        put(out, "config", p.relative_to(fixtures).as_posix().replace("/", "_"),
            p.read_bytes() + (SEP + gen.read_bytes() if gen.exists() else b""))
    for p in small_files(fixtures, "tokenizers/**/tokenizer.json"):
        cfg = p.parent / "tokenizer_config.json"
        put(out, "tokenizer", p.relative_to(fixtures).as_posix().replace("/", "_"),
            p.read_bytes() + (SEP + cfg.read_bytes() if cfg.exists() else b""))
    for p in small_files(fixtures, "tokenizers/chat/*.json"):
        spec = json.loads(p.read_text())
        for i, case in enumerate(spec.get("cases", [])[:3]):
            put(out, "chat_template", f"{p.stem}_{i}", spec["source"].encode() + SEP + json.dumps(case["messages"]).encode())
    for p in small_files(fixtures, "**/*.jsonl"):
        put(out, "data", p.relative_to(fixtures).as_posix().replace("/", "_"), p.read_bytes())


if __name__ == "__main__":
    main()
