"""References for `dms eval`, written into <fixture_dir>/eval/.

A tiny random-weight Llama with a byte-level BPE tokenizer trained here on seeded text, so the
whole command runs on it in seconds, and transformers' logits on documents of that text for
the perplexity check.

  tiny/            Llama checkpoint (GQA 4/2, 2 layers) with Mode B DMS decision heads
                   (dms_proj_alpha*, window 8, per head, random weights: about half the keys
                   are flagged), tokenizer.json, tokenizer_config.json
  tiny_base/       the same checkpoint without decision heads or dms_* fields
  text.txt         seeded English-like text (plain-text input)
  docs.jsonl       the same kind of text, one {"text": ...} object per line, 4 to 30 sentences
  tiny.ref.safetensors
                   doc.I (int64 [n_I]): documents of text.txt as transformers' tokenizer
                   encodes them (doc.0 the first 150 tokens, doc.1 the next 97), and
                   logits.I (fp32 [n_I, V]) from transformers (fp32, eager) over each
  tiny.ref.json    ppl.I: exp(mean NLL of tokens 1.. of doc.I) from those logits, computed
                   here with torch; text_tokens: the length of text.txt's encoding

Usage: make_eval_fixtures.py <fixture_dir>
"""
import json
import math
import os
import random
import sys

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from make_model_fixtures import randomize

VOCAB = 320  # asked of the BPE trainer; the model takes the size it gives
WINDOW = 8
DOC_LENGTHS = (150, 97)

WORDS = ("the a river town market road house tree cloud rain sun light morning evening child farmer "
         "teacher baker walked opened closed carried found watched saw heard quiet busy old new small "
         "large green blue slowly quickly after before under over near far and but then while because "
         "of to in on with from into across behind beside").split()


def sentences(rng, n):
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"]))
    return out


def train_tokenizer(corpus, out_dir):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
                   "add_bos_token": False}, f, indent=1)
    return tok


def copy_tokenizer(src, dst):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(src, name)) as f, open(os.path.join(dst, name), "w") as g:
            g.write(f.read())


def add_decision_heads(ckpt, config, seed):
    """Mode B tensors and dms_* fields, in the layout the reference trainer saves."""
    g = torch.Generator().manual_seed(seed)
    path = os.path.join(ckpt, "model.safetensors")
    tensors = load_file(path)
    H, n_kv = config.hidden_size, config.num_key_value_heads
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}.self_attn."
        tensors[prefix + "dms_proj_alpha_norm.weight"] = torch.rand(H, generator=g) * 0.8 + 0.6
        tensors[prefix + "dms_proj_alpha.weight"] = torch.randn(n_kv, H, generator=g) / math.sqrt(H)
    save_file(tensors, path, metadata={"format": "pt"})
    cfg_path = os.path.join(ckpt, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update({"dms_separate_alpha": True, "dms_alpha_scale": 100.0, "dms_initial_alpha_offset": 5.0,
                "dms_window_size": WINDOW, "dms_alpha_per": "head", "dms_cr": 2})
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=1)


def main(fixture_dir):
    out = os.path.join(fixture_dir, "eval")
    os.makedirs(out, exist_ok=True)
    rng = random.Random(5)
    text = " ".join(sentences(rng, 900))
    with open(os.path.join(out, "text.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "docs.jsonl"), "w") as f:
        for n in (4, 30, 9, 30, 6, 25):  # documents of different lengths
            f.write(json.dumps({"text": " ".join(sentences(rng, n)), "source": "seeded"}) + "\n")

    base = os.path.join(out, "tiny_base")
    tok = train_tokenizer(sentences(random.Random(7), 3000), base)
    # The model's vocabulary is exactly the tokenizer's: a random model samples every id it has,
    # and an id no tokenizer entry decodes would stop a greedy run.
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, bos_token_id=None, eos_token_id=0, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, 3)
    model.save_pretrained(base)

    tiny = os.path.join(out, "tiny")
    model.save_pretrained(tiny)
    copy_tokenizer(base, tiny)
    add_decision_heads(tiny, config, 4)

    hf_tok = PreTrainedTokenizerFast.from_pretrained(base)
    ids = hf_tok(text, add_special_tokens=False).input_ids
    ref = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager").eval()
    tensors, facts = {}, {"text_tokens": len(ids)}
    start = 0
    for i, n in enumerate(DOC_LENGTHS):
        doc = torch.tensor(ids[start:start + n], dtype=torch.int64)
        start += n
        with torch.no_grad():
            logits = ref(doc.unsqueeze(0)).logits[0].float().contiguous()
        nll = -torch.log_softmax(logits[:-1].double(), -1).gather(1, doc[1:].unsqueeze(1)).squeeze(1)
        tensors[f"doc.{i}"] = doc
        tensors[f"logits.{i}"] = logits
        facts[f"ppl.{i}"] = math.exp(nll.mean().item())
    save_file(tensors, os.path.join(out, "tiny.ref.safetensors"))
    with open(os.path.join(out, "tiny.ref.json"), "w") as f:
        json.dump(facts, f, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1])
