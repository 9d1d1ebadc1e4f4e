"""Golden references for the model forward, written into <fixture_dir>/models/.

Tiny random-weight checkpoints are created with transformers (every weight randomized, norms
and biases included) and run by transformers on CPU in fp32 with eager attention; the default
GGUF model is read by transformers' own GGUF loader (dequantized to fp32) and run the same way.
Also writes deliberately broken copies of a tiny checkpoint (safetensors and GGUF) for the
loaders' bad-input tests.

Layout, for each tiny model NAME:
  NAME/                  the checkpoint (config.json, safetensors, generation_config.json)
  NAME.ref.safetensors   prompt.I (int64 [T]) and logits.I (fp32 [T, V]) for each prompt;
                         gen.prompt, gen.tokens (32 greedy tokens), gen.gap (HF's top-1 minus
                         top-2 logit at each generated step)
  NAME.ref.json          the config as transformers reads it, module facts and parameter count
  NAME.gguf              the same weights converted to GGUF as llama.cpp would (same references)
plus default_gguf.ref.safetensors / default_gguf.ref.json for $DMS_DEFAULT_MODEL (same keys,
gen.I.* for each continuation), rope_variants/CASE/config.json with rope_variants.ref.json, and
bad/CASE/ and bad/gguf_CASE.gguf for the bad checkpoints.

Usage: make_model_fixtures.py <fixture_dir>
"""
import json
import math
import os
import shutil
import sys
import tempfile

import gguf
import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig,
                          Qwen2Config, Qwen3Config)
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

GEN_TOKENS = 32
# The longest runs past the dense KV cache's first allocation (256 tokens) in the C++ tests.
PROMPT_LENGTHS = (1, 7, 33, 300)
GEN_PROMPT_LENGTH = 5
# A generation prompt is accepted only when every greedy step's top-2 gap exceeds this, so the
# C++ comparison is not decided by rounding (the fp32 logit tolerance there is far below it).
MIN_GEN_GAP = 1e-2


def tiny_configs():
    """Name -> (config, seed, how the checkpoint is saved)."""
    common = dict(vocab_size=320, hidden_size=64, num_hidden_layers=3, max_position_embeddings=512,
                  rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)
    return {
        # GQA 4/2, untied head, Llama 3 rope scaling with the smoothing band inside head_dim 16.
        "llama_gqa": (LlamaConfig(**common, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2,
                                  tie_word_embeddings=False,
                                  rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 32}),
                      11, {"sharded": True}),
        # Tied embeddings, biases on every attention and MLP projection, plain MHA.
        "llama_tied_bias": (LlamaConfig(**common, intermediate_size=128, num_attention_heads=4, num_key_value_heads=4,
                                        tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
                            23, {}),
        # q/k/v biases, GQA 4/1, linear rope scaling, stored in bf16.
        "qwen2": (Qwen2Config(**common, intermediate_size=96, num_attention_heads=4, num_key_value_heads=1,
                              tie_word_embeddings=True,
                              rope_parameters={"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2.0}),
                  13, {"dtype": torch.bfloat16}),
        # Per-head q/k RMSNorm, head_dim 32 while hidden/heads is 16.
        "qwen3": (Qwen3Config(**common, intermediate_size=192, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=32, tie_word_embeddings=False,
                              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                  14, {}),
    }


def randomize(model, seed):
    """Every parameter drawn at random, scaled so activations stay O(1) and logits spread out."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.6)
            elif name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            elif "embed_tokens" in name:
                # Small next to the layers' outputs, so a tied head does not just echo the input token.
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name == "lm_head.weight":
                p.copy_(torch.randn(p.shape, generator=g) * 3.0 / math.sqrt(p.shape[1]))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def load_reference(ckpt_dir):
    return AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def full_logits(model, ids):
    return model(torch.tensor([ids])).logits[0].float().contiguous()


@torch.no_grad()
def greedy(model, ids):
    """GEN_TOKENS greedy tokens decoded one at a time over transformers' KV cache, end-of-sequence
    ignored, and the top-1 minus top-2 logit gap at each step."""
    out = model(torch.tensor([ids]), use_cache=True)
    tokens, gaps = [], []
    for _ in range(GEN_TOKENS):
        logits = out.logits[0, -1].float()
        top2 = logits.topk(2).values
        tokens.append(int(logits.argmax()))
        gaps.append(float(top2[0] - top2[1]))
        out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return torch.tensor(tokens, dtype=torch.int64), torch.tensor(gaps, dtype=torch.float32)


# quant_matmul's decode path (calls of fewer rows than kBatchedMinRows, quant_matmul.h) multiplies
# the weights as stored by activations quantized to 16 bits per 32 values.
I16_MAX_ROWS = 23


def quantize_i16(x):
    """x with each run of 32 values replaced by q * s: s = max |x| / 32767, q = x / s rounded to
    nearest (even), as the kernels' rule says (quant_blocks.h)."""
    blocks = x.reshape(-1, 32)
    m = blocks.abs().amax(dim=1, keepdim=True)
    inv = torch.where(m > 0, 32767 / m, torch.zeros_like(m))
    return (torch.round(blocks * inv) * (m / 32767)).reshape(x.shape)


class Int16Activations:
    """While active, every nn.Linear of `model` called with at most I16_MAX_ROWS rows sees its
    input quantized by quantize_i16 (the engine's as-stored GGUF path)."""

    def __init__(self, model):
        self.model, self.handles = model, []

    def __enter__(self):
        def hook(module, args):
            x = args[0]
            return (quantize_i16(x),) if x.numel() // x.shape[-1] <= I16_MAX_ROWS else None
        self.handles = [m.register_forward_pre_hook(hook) for m in self.model.modules()
                        if isinstance(m, torch.nn.Linear)]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@torch.no_grad()
def split_logits(model, ids, decode_steps):
    """The prompt as a prefill of all but its last `decode_steps` tokens, then one token per step
    over transformers' KV cache: every position's logits."""
    split = len(ids) - decode_steps
    out = model(torch.tensor([ids[:split]]), use_cache=True)
    pieces = [out.logits[0]]
    for t in ids[split:]:
        out = model(torch.tensor([[t]]), past_key_values=out.past_key_values, use_cache=True)
        pieces.append(out.logits[0])
    return torch.cat(pieces).float().contiguous()


def rope_facts(config):
    rope = config.rope_parameters
    return {
        "rope_type": rope["rope_type"],
        "rope_theta": rope["rope_theta"],
        "rope_factor": rope.get("factor", 1.0),
        "rope_low_freq_factor": rope.get("low_freq_factor"),
        "rope_high_freq_factor": rope.get("high_freq_factor"),
        "rope_original_max_position": rope.get("original_max_position_embeddings"),
    }


def hf_config_facts(model):
    """The shape facts as transformers reads them, plus what the modules actually contain."""
    c = model.config
    attn = model.model.layers[0].self_attn
    mlp = model.model.layers[0].mlp
    eos = c.eos_token_id
    return {
        "model_type": c.model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": attn.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        **rope_facts(c),
        "tie_word_embeddings": model.lm_head.weight is model.model.embed_tokens.weight,
        "q_bias": attn.q_proj.bias is not None,
        "k_bias": attn.k_proj.bias is not None,
        "v_bias": attn.v_proj.bias is not None,
        "o_bias": attn.o_proj.bias is not None,
        "mlp_bias": mlp.gate_proj.bias is not None,
        "qk_norm": hasattr(attn, "q_norm"),
        "bos_token_id": c.bos_token_id,
        "eos_token_ids": eos if isinstance(eos, list) else [eos],
    }


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def pick_gen_prompt(model, vocab, seed):
    """The first seeded random prompt whose greedy continuation has no near-tie step."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(50):
        ids = torch.randint(3, vocab, (GEN_PROMPT_LENGTH,), generator=g).tolist()
        tokens, gaps = greedy(model, ids)
        if gaps.min().item() > MIN_GEN_GAP:
            return ids, tokens, gaps
    raise RuntimeError("no generation prompt without near-ties found")


def make_tiny(models_dir, name, config, seed, save):
    torch.manual_seed(seed)
    ckpt = os.path.join(models_dir, name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, seed)
    model = model.to(save.get("dtype", torch.float32))
    shard = {"max_shard_size": "120KB"} if save.get("sharded") else {}
    model.save_pretrained(ckpt, **shard)
    if save.get("sharded"):
        assert os.path.exists(os.path.join(ckpt, "model.safetensors.index.json")), "sharding did not happen"

    ref = load_reference(ckpt)
    vocab = ref.config.vocab_size
    g = torch.Generator().manual_seed(seed + 1000)
    tensors = {}
    for i, n in enumerate(PROMPT_LENGTHS):
        ids = torch.randint(0, vocab, (n,), generator=g)
        tensors[f"prompt.{i}"] = ids.to(torch.int64)
        tensors[f"logits.{i}"] = full_logits(ref, ids.tolist())
    ids, tokens, gaps = pick_gen_prompt(ref, vocab, seed + 2000)
    tensors["gen.prompt"] = torch.tensor(ids, dtype=torch.int64)
    tensors["gen.tokens"] = tokens
    tensors["gen.gap"] = gaps
    save_file(tensors, os.path.join(models_dir, f"{name}.ref.safetensors"))
    facts = {
        "hf_config": hf_config_facts(ref),
        "parameter_count": parameter_count(ref),
        "stored_dtype": str(save.get("dtype", torch.float32)).removeprefix("torch."),
        "sharded": bool(save.get("sharded")),
    }
    with open(os.path.join(models_dir, f"{name}.ref.json"), "w") as f:
        json.dump(facts, f, indent=1)
    return ckpt


def make_rope_variants(models_dir, source):
    """Config-only copies of `source` with the rope settings written other ways, and the rope
    parameters transformers reads from each (rope_variants.ref.json)."""
    with open(os.path.join(source, "config.json")) as f:
        base = json.load(f)

    def legacy(cfg):
        # Older checkpoints: top-level rope_theta, rope_scaling with "type".
        params = cfg.pop("rope_parameters")
        cfg["rope_theta"] = params.pop("rope_theta")
        params["type"] = params.pop("rope_type")
        cfg["rope_scaling"] = params

    def llama3_without_original(cfg):
        # transformers falls back to max_position_embeddings.
        del cfg["rope_parameters"]["original_max_position_embeddings"]

    def both_keys(cfg):
        # rope_scaling and rope_parameters together: transformers takes rope_scaling.
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": 3.0}

    facts = {}
    for name, edit in [("legacy_rope_scaling", legacy), ("llama3_without_original", llama3_without_original),
                       ("rope_scaling_and_parameters", both_keys)]:
        cfg = json.loads(json.dumps(base))
        edit(cfg)
        out = os.path.join(models_dir, "rope_variants", name)
        os.makedirs(out)
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        facts[name] = rope_facts(AutoConfig.from_pretrained(out))
    with open(os.path.join(models_dir, "rope_variants.ref.json"), "w") as f:
        json.dump(facts, f, indent=1)


def make_bad_checkpoints(models_dir, good, sharded_good):
    """Broken copies of good checkpoints, one fault each (tests/test_model_bad_input.cpp says
    what each error must name)."""
    bad = os.path.join(models_dir, "bad")

    def copy(case, source=good):
        d = os.path.join(bad, case)
        shutil.copytree(source, d)
        return d

    def edit_config(d, fn):
        p = os.path.join(d, "config.json")
        with open(p) as f:
            cfg = json.load(f)
        fn(cfg)
        with open(p, "w") as f:
            json.dump(cfg, f, indent=1)

    def edit_weights(d, fn):
        p = os.path.join(d, "model.safetensors")
        tensors = load_file(p)
        fn(tensors)
        save_file(tensors, p, metadata={"format": "pt"})

    d = copy("unsupported_arch")
    edit_config(d, lambda c: c.update(model_type="gpt_neox"))

    d = copy("missing_field")
    edit_config(d, lambda c: c.pop("num_hidden_layers"))

    d = copy("wrong_type")
    edit_config(d, lambda c: c.update(hidden_size="64"))

    d = copy("heads_not_divisible")
    edit_config(d, lambda c: c.update(num_key_value_heads=3))

    d = copy("unsupported_rope")
    edit_config(d, lambda c: c.update(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}))

    name = "model.layers.1.mlp.up_proj.weight"
    d = copy("wrong_shape")
    edit_weights(d, lambda t: t.update({name: t[name].t().contiguous()}))

    name = "model.layers.0.self_attn.k_proj.weight"
    d = copy("missing_weight")
    edit_weights(d, lambda t: t.pop(name))

    name = "model.layers.2.self_attn.o_proj.weight"
    d = copy("int_weight")
    edit_weights(d, lambda t: t.update({name: t[name].to(torch.int32)}))

    # The index sends one shard's tensors to a file that does not exist.
    d = copy("missing_shard", sharded_good)
    index_path = os.path.join(d, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    gone = sorted(set(index["weight_map"].values()))[-1]
    os.remove(os.path.join(d, gone))
    index["weight_map"] = {k: ("model-absent.safetensors" if v == gone else v) for k, v in index["weight_map"].items()}
    with open(index_path, "w") as f:
        json.dump(index, f, indent=1)


def llama_cpp_interleave(w, n_head):
    """llama.cpp's Llama q/k layout: within each head, rows (i, D/2 + i) of the rotate-half
    layout become adjacent pairs (2i, 2i + 1)."""
    head_dim = w.shape[0] // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def llama3_rope_factors(config, dim):
    """What llama.cpp stores as rope_freqs for Llama 3 scaling: per frequency, the divisor that
    turns the plain inverse frequency into the scaled one."""
    rope = config.rope_parameters
    inv_freq = 1.0 / rope["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    wavelen = 2 * math.pi / inv_freq
    old = rope["original_max_position_embeddings"]
    low, high, factor = rope["low_freq_factor"], rope["high_freq_factor"], rope["factor"]
    smooth = (old / wavelen - low) / (high - low)
    factors = torch.where(wavelen < old / high, torch.ones_like(wavelen),
                          torch.where(wavelen > old / low, torch.full_like(wavelen, factor),
                                      1.0 / ((1 - smooth) / factor + smooth)))
    return factors.float()


def gguf_conversion(ckpt):
    """The checkpoint converted the way llama.cpp converts it: metadata under gguf-py's key
    names, tensors under gguf-py's tensor names, Llama q/k interleaved, Llama 3 scaling as
    rope_freqs. Returns (model, arch name, [(key, value, type)], {gguf name: tensor})."""
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="auto")
    c = model.config
    head_dim = model.model.layers[0].self_attn.head_dim
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "qwen3": gguf.MODEL_ARCH.QWEN3}[c.model_type]
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    K, V = gguf.Keys, gguf.GGUFValueType
    kv = [
        (K.LLM.BLOCK_COUNT, c.num_hidden_layers, V.UINT32),
        (K.LLM.CONTEXT_LENGTH, c.max_position_embeddings, V.UINT32),
        (K.LLM.EMBEDDING_LENGTH, c.hidden_size, V.UINT32),
        (K.LLM.FEED_FORWARD_LENGTH, c.intermediate_size, V.UINT32),
        (K.Attention.HEAD_COUNT, c.num_attention_heads, V.UINT32),
        (K.Attention.HEAD_COUNT_KV, c.num_key_value_heads, V.UINT32),
        (K.Attention.KEY_LENGTH, head_dim, V.UINT32),
        (K.Attention.VALUE_LENGTH, head_dim, V.UINT32),
        (K.Rope.DIMENSION_COUNT, head_dim, V.UINT32),
        (K.Attention.LAYERNORM_RMS_EPS, c.rms_norm_eps, V.FLOAT32),
        (K.Rope.FREQ_BASE, c.rope_parameters["rope_theta"], V.FLOAT32),
        (K.LLM.VOCAB_SIZE, c.vocab_size, V.UINT32),
    ]
    if c.rope_parameters["rope_type"] == "linear":
        kv += [(K.Rope.SCALING_TYPE, gguf.RopeScalingType.LINEAR.value, V.STRING),
               (K.Rope.SCALING_FACTOR, c.rope_parameters["factor"], V.FLOAT32)]
    kv = [(key.format(arch=arch_name), value, vtype) for key, value, vtype in kv]
    kv += [(K.Tokenizer.BOS_ID, c.bos_token_id, V.UINT32), (K.Tokenizer.EOS_ID, c.eos_token_id, V.UINT32)]

    tensors = {}
    if c.rope_parameters["rope_type"] == "llama3":
        factors = llama3_rope_factors(c, head_dim)
        plain = 1.0 / c.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        assert torch.allclose(plain / factors.double(), model.model.rotary_emb.inv_freq.double(), rtol=1e-6), \
            "rope_freqs do not reproduce transformers' Llama 3 frequencies"
        tensors[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = factors
    names = gguf.get_tensor_name_map(arch, c.num_hidden_layers)
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name, f"gguf-py has no name for {hf_name}"
        if c.model_type == "llama" and ".q_proj." in hf_name:
            t = llama_cpp_interleave(t, c.num_attention_heads)
        if c.model_type == "llama" and ".k_proj." in hf_name:
            t = llama_cpp_interleave(t, c.num_key_value_heads)
        tensors[gguf_name] = t
    return model, arch_name, kv, tensors


def write_gguf(path, arch_name, kv, tensors, matrix_type=None):
    """1-D tensors as F32 (as llama.cpp keeps norms and biases), matrices in their dtype: F32,
    or BF16 for a bf16 checkpoint; or every matrix in `matrix_type` (a GGMLQuantizationType),
    quantized by gguf-py."""
    w = gguf.GGUFWriter(path, arch_name)
    for key, value, vtype in kv:
        w.add_key_value(key, value, vtype)
    for name, t in tensors.items():
        t = t.detach().contiguous()
        if matrix_type is not None and t.dim() > 1:
            w.add_tensor(name, gguf.quants.quantize(t.float().numpy(), matrix_type), raw_dtype=matrix_type)
        elif t.dtype == torch.bfloat16 and t.dim() > 1:
            w.add_tensor(name, t.view(torch.uint8).numpy(), raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(name, t.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_tiny_gguf(models_dir, name):
    """NAME.gguf, checked by reading it back with transformers' GGUF loader (which undoes the
    q/k interleave itself); the C++ test reuses NAME's logits as the reference."""
    model, arch_name, kv, tensors = gguf_conversion(os.path.join(models_dir, name))
    path = os.path.join(models_dir, f"{name}.gguf")
    write_gguf(path, arch_name, kv, tensors)
    read_back = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        assert torch.equal(torch.as_tensor(read_back[hf_name]).float(), t.float()), f"{name}.gguf: {hf_name} differs"


# The block types gguf-py can write, for the tiny models as stored (the K-quants it only reads).
QUANT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16")


def write_tiny_quantized_ggufs(models_dir, name):
    """NAME.TYPE.gguf for each of QUANT_TYPES (every matrix in that type, the embedding and output
    included), and NAME.TYPE.ref.safetensors: logits.I of NAME's prompts from transformers over the
    weights its GGUF loader dequantizes, and i16.logits.I with the engine's 16-bit activations
    (Int16Activations; for the block types, whose decode kernels quantize them)."""
    model, arch_name, kv, tensors = gguf_conversion(os.path.join(models_dir, name))
    prompts = load_file(os.path.join(models_dir, f"{name}.ref.safetensors"))
    model = model.float().eval()
    for qtype in QUANT_TYPES:
        path = os.path.join(models_dir, f"{name}.{qtype}.gguf")
        write_gguf(path, arch_name, kv, tensors, matrix_type=getattr(gguf.GGMLQuantizationType, qtype))
        state = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)["tensors"]
        result = model.load_state_dict({k: torch.as_tensor(v).float() for k, v in state.items()}, strict=False)
        assert not result.unexpected_keys and result.missing_keys == (
            ["lm_head.weight"] if model.config.tie_word_embeddings else []), result
        refs = {}
        for i in range(len(PROMPT_LENGTHS)):
            ids = prompts[f"prompt.{i}"].tolist()
            refs[f"logits.{i}"] = full_logits(model, ids)
            if not qtype.startswith(("F", "B")):
                with Int16Activations(model):
                    refs[f"i16.logits.{i}"] = full_logits(model, ids)
        save_file(refs, os.path.join(models_dir, f"{name}.{qtype}.ref.safetensors"))


def make_bad_ggufs(models_dir, good):
    """Broken variants of a tiny Llama GGUF, one fault each (tests/test_model_bad_input.cpp
    says what each error must name)."""
    _, arch_name, kv, tensors = gguf_conversion(os.path.join(models_dir, good))
    bad = os.path.join(models_dir, "bad")
    os.makedirs(bad, exist_ok=True)

    def without_key(key):
        return [e for e in kv if e[0] != key]

    renamed = [(k.replace(f"{arch_name}.", "gptneox."), v, t) for k, v, t in kv]
    write_gguf(os.path.join(bad, "gguf_unsupported_arch.gguf"), "gptneox", renamed, tensors)
    write_gguf(os.path.join(bad, "gguf_missing_key.gguf"), arch_name, without_key(f"{arch_name}.block_count"), tensors)
    mistyped = without_key(f"{arch_name}.embedding_length") + [(f"{arch_name}.embedding_length", "64",
                                                                gguf.GGUFValueType.STRING)]
    write_gguf(os.path.join(bad, "gguf_wrong_type_key.gguf"), arch_name, mistyped, tensors)
    write_gguf(os.path.join(bad, "gguf_missing_tensor.gguf"), arch_name, kv,
               {k: v for k, v in tensors.items() if k != "blk.1.ffn_down.weight"})
    reshaped = dict(tensors)
    reshaped["blk.0.ffn_up.weight"] = tensors["blk.0.ffn_up.weight"].t()
    write_gguf(os.path.join(bad, "gguf_wrong_shape.gguf"), arch_name, kv, reshaped)


def gguf_metadata_facts(path):
    """The metadata a loader needs, as gguf-py reads it."""
    r = gguf.GGUFReader(path)

    def value(key):
        field = r.fields.get(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    return {
        "architecture": arch,
        "block_count": value(f"{arch}.block_count"),
        "embedding_length": value(f"{arch}.embedding_length"),
        "feed_forward_length": value(f"{arch}.feed_forward_length"),
        "head_count": value(f"{arch}.attention.head_count"),
        "head_count_kv": value(f"{arch}.attention.head_count_kv"),
        "rope_dimension_count": value(f"{arch}.rope.dimension_count"),
        "context_length": value(f"{arch}.context_length"),
        "rms_eps": value(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_freq_base": value(f"{arch}.rope.freq_base"),
        "token_count": len(r.fields["tokenizer.ggml.tokens"].data),
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "has_output_weight": any(t.name == "output.weight" for t in r.tensors),
    }


def load_gguf_reference(path):
    """The model transformers builds from a GGUF file, dequantized to fp32 (its GGUF loader,
    used directly because from_pretrained(gguf_file=...) insists on the accelerate package)."""
    tmp = tempfile.mkdtemp()
    try:
        os.symlink(os.path.abspath(path), os.path.join(tmp, "model.gguf"))
        config = AutoConfig.from_pretrained(tmp, gguf_file="model.gguf")
        config._attn_implementation = "eager"
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file="model.gguf")
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = load_gguf_checkpoint(os.path.join(tmp, "model.gguf"), return_tensors=True,
                                     model_to_load=model)["tensors"]
    finally:
        shutil.rmtree(tmp)
    result = model.load_state_dict(state, strict=False)
    expected_missing = ["lm_head.weight"] if config.tie_word_embeddings else []
    assert result.missing_keys == expected_missing and not result.unexpected_keys, result
    return model.eval(), tokenizer


def make_default_gguf(models_dir, path):
    model, tok = load_gguf_reference(path)
    chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    texts = [
        "The quick brown fox",
        chat,
        "In 1969, two astronauts walked on the Moon while a third orbited above. The mission had taken "
        "eight years of planning, and millions of people watched",
    ]
    # Continuations whose greedy steps have no near-ties (top-2 gaps above 0.05).
    gen_texts = [chat, "def fibonacci(n):", "Water boils at"]
    tensors, prompts = {}, []
    for i, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        prompts.append(text)
        tensors[f"prompt.{i}"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"logits.{i}"] = full_logits(model, ids)
    for i, text in enumerate(gen_texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        tokens, gaps = greedy(model, ids)
        tensors[f"gen.{i}.prompt"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"gen.{i}.tokens"] = tokens
        tensors[f"gen.{i}.gap"] = gaps
    # The same with 16-bit activations where the engine quantizes them: i16.logits.I, i16.split.1
    # (prompt 1 as a prefill and 6 decode steps), i16.gen.I.*.
    with Int16Activations(model):
        for i in range(len(texts)):
            tensors[f"i16.logits.{i}"] = full_logits(model, tensors[f"prompt.{i}"].tolist())
        tensors["i16.split.1"] = split_logits(model, tensors["prompt.1"].tolist(), 6)
        for i in range(len(gen_texts)):
            tokens, gaps = greedy(model, tensors[f"gen.{i}.prompt"].tolist())
            tensors[f"i16.gen.{i}.tokens"] = tokens
            tensors[f"i16.gen.{i}.gap"] = gaps
    save_file(tensors, os.path.join(models_dir, "default_gguf.ref.safetensors"))
    facts = {
        "gguf_metadata": gguf_metadata_facts(path),
        "hf_config": hf_config_facts(model),
        "parameter_count": parameter_count(model),
        "prompts": prompts,
        "gen_prompts": gen_texts,
    }
    with open(os.path.join(models_dir, "default_gguf.ref.json"), "w") as f:
        json.dump(facts, f, indent=1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    models_dir = os.path.join(sys.argv[1], "models")
    shutil.rmtree(models_dir, ignore_errors=True)
    os.makedirs(models_dir)
    made = {}
    for name, (config, seed, save) in tiny_configs().items():
        made[name] = make_tiny(models_dir, name, config, seed, save)
    for name in made:
        write_tiny_gguf(models_dir, name)
        write_tiny_quantized_ggufs(models_dir, name)
    make_rope_variants(models_dir, made["llama_gqa"])
    make_bad_checkpoints(models_dir, made["llama_tied_bias"], made["llama_gqa"])
    make_bad_ggufs(models_dir, "llama_tied_bias")
    default_model = os.environ.get("DMS_DEFAULT_MODEL")
    if not default_model or not os.path.exists(default_model):
        sys.exit(f"DMS_DEFAULT_MODEL ({default_model!r}) is not a file; run scripts/fetch-default-model")
    make_default_gguf(models_dir, default_model)


if __name__ == "__main__":
    main()
