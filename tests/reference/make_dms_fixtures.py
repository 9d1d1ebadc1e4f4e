"""Golden references for DMS decision heads, written into <fixture_dir>/dms/.

Tiny random-weight Qwen3 checkpoints with decision heads, and a reference DMS forward built on
transformers' Qwen3 (fp32, CPU): each layer's attention is replaced by a function that computes
the decision logits (dms-spec section 1), zeroes the borrowed query channel in Mode A, and attends
densely over the whole sequence under the delayed-eviction visibility rule of dms-spec section 2
(never paged, never cached: every generation step recomputes the full sequence).

Checkpoints (each NAME is a Hugging Face directory):
  mode_a             Mode A (borrowed query channel), config.json laid out like the released
                     nvidia/Qwen3-8B-DMS-8x (model_type qwen3, its architectures and auto_map, the
                     dms_* fields of its config class), GQA 8/2, window 16
  mode_b_head        Mode B adapter tensors, decisions per head, GQA 4/2, window 16
  mode_b_layer       Mode B with attention biases (so dms_proj_alpha has a bias), decisions per
                     layer (every head uses head 0's logit), GQA 4/2, window 16
  mode_b_head_base, mode_b_layer_base
                     the same weights without the adapter tensors and dms_* fields

References NAME.ref.safetensors, for a 20-token random prompt and 200 greedy tokens (every step
recomputed from scratch with the DMS mask):
  prompt [P] int64, tokens [200] int64, gap [200] (top-1 minus top-2 logit at each greedy step)
  logits [P+199, V]        the logits at every position of prompt + tokens[:-1], teacher-forced
  decision_logits [L, P+199, n_kv]   l[t, g] of every layer (after the per-layer broadcast)
  query [L, P+199, n_heads, D]       the queries attention used (after RoPE and, in Mode A, the
                                     second zeroing)
  noevict.logits [P+199, V]          the same tokens with eviction disabled (dms_disable_eviction:
                                     Mode A still zeroes its borrowed channel)
  base.logits [P+199, V]             (Mode B only) the base checkpoint run by plain transformers
NAME.ref.json: the dms_* settings as transformers' config reads them, the share of flagged
decisions per layer, and the smallest |decision logit| (far from 0, so a rounding-level difference
cannot flip a decision).

Usage: make_dms_fixtures.py <fixture_dir>
"""
import json
import math
import os
import shutil
import sys
import types

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, Qwen3Config
from transformers.models.qwen3.modeling_qwen3 import Qwen3RMSNorm, apply_rotary_pos_emb, repeat_kv

from make_model_fixtures import randomize

PROMPT_TOKENS = 20
GEN_TOKENS = 200
WINDOW = 16
# A decision logit this close to 0 could flip under fp32 rounding; such a prompt is not used.
MIN_DECISION_MARGIN = 1e-2
# Nor one with a greedy step whose top-2 logits are this close (the C++ test's near-tie rule
# would stop comparing tokens there).
MIN_GEN_GAP = 1e-2

# The fields of the released checkpoint's config class (Qwen3ConfigDMS), as it writes them.
RELEASED_LAYOUT = {
    "architectures": ["Qwen3ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_qwen3_dms.Qwen3Config",
                 "AutoModelForCausalLM": "modeling_qwen3_dms.Qwen3ForCausalLM"},
    "dms_alpha_scale": 100.0,
    "dms_initial_alpha_offset": 5.0,
    "dms_window_size": WINDOW,
    "dms_paged_attention_block_size": 8,
    "dms_cr": 8,
    "dms_disable_eviction": False,
    "dms_separate_alpha": False,
    "dms_alpha_per": "head",
    "dms_tau": 0.1,
    "dms_compile_limit": 72,
    "dms_manual_inference_mode": False,
    "dms_chunked_prefill": None,
    "dms_preallocate_for_tokens": 4096,
}


def tiny_configs():
    """Name -> (Qwen3Config, seed, dms_* fields for config.json)."""
    common = dict(vocab_size=320, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                  max_position_embeddings=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                  tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    adapter = {"dms_alpha_scale": 100.0, "dms_initial_alpha_offset": 5.0, "dms_window_size": WINDOW,
               "dms_separate_alpha": True, "dms_cr": 4}
    return {
        "mode_a": (Qwen3Config(**common, num_attention_heads=8, num_key_value_heads=2, head_dim=16), 31,
                   RELEASED_LAYOUT),
        "mode_b_head": (Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=16), 32,
                        {**adapter, "dms_alpha_per": "head"}),
        "mode_b_layer": (Qwen3Config(**common, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                     attention_bias=True), 33,
                         {**adapter, "dms_alpha_per": "layer", "dms_initial_alpha_offset": 3.0}),
    }


class DmsSettings:
    """The dms_* fields as transformers' config object holds them (unknown keys become attributes)."""

    def __init__(self, config):
        self.separate_alpha = config.dms_separate_alpha
        self.scale = config.dms_alpha_scale
        self.offset = config.dms_initial_alpha_offset
        self.window = config.dms_window_size
        self.per_layer = config.dms_alpha_per == "layer"
        self.evict = not getattr(config, "dms_disable_eviction", False)

    def facts(self):
        return {"dms_separate_alpha": self.separate_alpha, "dms_alpha_scale": self.scale,
                "dms_initial_alpha_offset": self.offset, "dms_window_size": self.window,
                "per_layer": self.per_layer}


def visibility(logits, window):
    """[B, n_kv, T] decision logits -> [B, n_kv, T, T] bool: query i sees key j iff j <= i and
    (key j is not flagged or i - j <= window); key j is flagged when the logit at j + 1 is positive,
    so the newest key is never flagged."""
    T = logits.shape[-1]
    flagged = torch.zeros_like(logits, dtype=torch.bool)
    flagged[..., :-1] = logits[..., 1:] > 0
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) & (~flagged[..., None, :] | (i - j <= window))


def dms_attention(self, hidden_states, position_embeddings, attention_mask=None, **kwargs):
    """Replaces Qwen3Attention.forward for a whole sequence (no KV cache)."""
    s = self.dms
    B, T, _ = hidden_states.shape
    shape = (B, T, -1, self.head_dim)
    q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)  # [B, n_heads, T, D]
    k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)  # [B, n_kv, T, D]
    v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
    G = self.num_key_value_groups
    if s.separate_alpha:
        # Mode B: from the residual stream entering the layer.
        logits = (self.dms_proj_alpha(self.dms_proj_alpha_norm(self.dms_residual)) * s.scale - s.offset)
        logits = logits.transpose(1, 2)
    else:
        # Mode A: the last channel of the first query head of each KV group, which then takes no
        # part in attention: zeroed before RoPE and again after it.
        logits = q[:, ::G, :, -1] * s.scale - s.offset
        q = q.clone()
        q[:, ::G, :, -1] = 0
    cos, sin = position_embeddings
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    if not s.separate_alpha:
        q[:, ::G, :, -1] = 0
    if s.per_layer:
        logits = logits[:, :1].expand_as(logits)
    self.dms_seen = (logits[0].transpose(0, 1).detach().clone(), q[0].transpose(0, 1).detach().clone())

    if s.evict:
        visible = visibility(logits, s.window)
    else:
        visible = torch.ones(B, logits.shape[1], T, T, dtype=torch.bool).tril()
    visible = visible.repeat_interleave(G, dim=1)  # query head h reads KV head h // G
    scores = torch.matmul(q, repeat_kv(k, G).transpose(2, 3)) * self.scaling
    scores = scores.masked_fill(~visible, float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), repeat_kv(v, G))
    out = out.transpose(1, 2).reshape(B, T, -1)
    return self.o_proj(out), None


def keep_residual(layer, args, kwargs):
    layer.self_attn.dms_residual = args[0] if args else kwargs["hidden_states"]


def install_dms(model, settings):
    for layer in model.model.layers:
        layer.self_attn.dms = settings
        layer.self_attn.forward = types.MethodType(dms_attention, layer.self_attn)
        layer.register_forward_pre_hook(keep_residual, with_kwargs=True)


def add_adapter(model, seed):
    """Mode B tensors with random weights: logits spread over tens of units around -offset, so
    both kept and flagged tokens are common."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    for layer in model.model.layers:
        attn = layer.self_attn
        attn.dms_proj_alpha_norm = Qwen3RMSNorm(c.hidden_size, eps=c.rms_norm_eps)
        attn.dms_proj_alpha = torch.nn.Linear(c.hidden_size, c.num_key_value_heads, bias=c.attention_bias)
        with torch.no_grad():
            attn.dms_proj_alpha_norm.weight.copy_(torch.rand(c.hidden_size, generator=g) * 0.8 + 0.6)
            attn.dms_proj_alpha.weight.copy_(
                torch.randn(attn.dms_proj_alpha.weight.shape, generator=g) * 0.15 / math.sqrt(c.hidden_size))
            if attn.dms_proj_alpha.bias is not None:
                attn.dms_proj_alpha.bias.copy_(torch.randn(c.num_key_value_heads, generator=g) * 0.02)


def edit_config(ckpt, fields):
    path = os.path.join(ckpt, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(fields)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


@torch.no_grad()
def last_logits(model, ids):
    return model(torch.tensor([ids]), use_cache=False).logits[0, -1].float()


@torch.no_grad()
def greedy(model, prompt):
    """GEN_TOKENS greedy tokens, each step a fresh forward over the whole sequence."""
    ids, tokens, gaps = list(prompt), [], []
    for _ in range(GEN_TOKENS):
        logits = last_logits(model, ids)
        top2 = logits.topk(2).values
        tokens.append(int(logits.argmax()))
        gaps.append(float(top2[0] - top2[1]))
        ids.append(tokens[-1])
    return tokens, gaps


@torch.no_grad()
def teacher_forced(model, ids):
    """Logits at every position, and each layer's decision logits and queries."""
    logits = model(torch.tensor([ids]), use_cache=False).logits[0].float().contiguous()
    seen = [layer.self_attn.dms_seen for layer in model.model.layers]
    return logits, torch.stack([s[0] for s in seen]).contiguous(), torch.stack([s[1] for s in seen]).contiguous()


def load_dms_reference(ckpt, evict=True):
    model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    config = AutoConfig.from_pretrained(ckpt)
    settings = DmsSettings(config)
    settings.evict = evict
    if settings.separate_alpha:
        # transformers' Qwen3 has no adapter modules: build them and load the checkpoint's tensors.
        from safetensors.torch import load_file
        add_adapter(model, 0)
        state = load_file(os.path.join(ckpt, "model.safetensors"))
        adapter = {k: v for k, v in state.items() if ".dms_proj_alpha" in k}
        missing = model.load_state_dict(adapter, strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        assert len(adapter) == len([k for k, _ in model.named_parameters() if ".dms_proj_alpha" in k])
    install_dms(model, settings)
    return model, settings


def make_checkpoint(out_dir, name, config, seed, dms_fields):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, seed)
    ckpt = os.path.join(out_dir, name)
    if dms_fields.get("dms_separate_alpha"):
        model.save_pretrained(os.path.join(out_dir, name + "_base"))
        add_adapter(model, seed + 500)
    model.save_pretrained(ckpt)
    edit_config(ckpt, dms_fields)
    return ckpt


def pick_prompt(model, vocab, seed):
    """The first seeded random prompt whose greedy steps have no near-tie and whose teacher-forced
    decisions all keep a margin from 0."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        prompt = torch.randint(3, vocab, (PROMPT_TOKENS,), generator=g).tolist()
        tokens, gaps = greedy(model, prompt)
        if min(gaps) <= MIN_GEN_GAP:
            continue
        logits, decisions, query = teacher_forced(model, prompt + tokens[:-1])
        if decisions.abs().min().item() > MIN_DECISION_MARGIN:
            return prompt, tokens, gaps, logits, decisions, query
    raise RuntimeError("no prompt without near-ties whose decision logits all stay away from 0")


def make_reference(out_dir, name, ckpt, seed):
    model, settings = load_dms_reference(ckpt)
    vocab = model.config.vocab_size
    prompt, tokens, gaps, logits, decisions, query = pick_prompt(model, vocab, seed + 1000)
    ids = prompt + tokens[:-1]
    # The greedy steps ran the same math on growing prefixes: their last rows agree.
    step_logits = last_logits(model, prompt)
    assert (step_logits - logits[PROMPT_TOKENS - 1]).abs().max() < 1e-4

    noevict_model, _ = load_dms_reference(ckpt, evict=False)
    noevict, _, _ = teacher_forced(noevict_model, ids)
    tensors = {
        "prompt": torch.tensor(prompt, dtype=torch.int64),
        "tokens": torch.tensor(tokens, dtype=torch.int64),
        "gap": torch.tensor(gaps, dtype=torch.float32),
        "logits": logits,
        "decision_logits": decisions,
        "query": query,
        "noevict.logits": noevict,
    }
    if settings.separate_alpha:
        base = AutoModelForCausalLM.from_pretrained(ckpt + "_base", dtype=torch.float32,
                                                    attn_implementation="eager").eval()
        with torch.no_grad():
            tensors["base.logits"] = base(torch.tensor([ids]), use_cache=False).logits[0].float().contiguous()
        # Disabled eviction in Mode B is the base model.
        assert (tensors["base.logits"] - noevict).abs().max() < 1e-4
    # Evictions must change the outcome, or the comparison could not tell eviction from none.
    assert (logits - noevict).abs().max() > 0.1, f"{name}: eviction does not change the logits"

    flagged = (decisions[:, 1:] > 0).float().mean(dim=(1, 2))
    assert ((flagged > 0.1) & (flagged < 0.9)).all(), f"{name}: flagged shares {flagged.tolist()}"
    save_file(tensors, os.path.join(out_dir, f"{name}.ref.safetensors"))
    facts = {
        "dms": settings.facts(),
        "flagged_share_per_layer": flagged.tolist(),
        "min_abs_decision_logit": decisions.abs().min().item(),
        "prompt_tokens": PROMPT_TOKENS,
        "generated_tokens": GEN_TOKENS,
    }
    with open(os.path.join(out_dir, f"{name}.ref.json"), "w") as f:
        json.dump(facts, f, indent=1)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.use_deterministic_algorithms(True)
    # The matrices are tiny: a second thread only adds synchronisation.
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    out_dir = os.path.join(sys.argv[1], "dms")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for name, (config, seed, dms_fields) in tiny_configs().items():
        ckpt = make_checkpoint(out_dir, name, config, seed, dms_fields)
        make_reference(out_dir, name, ckpt, seed)


if __name__ == "__main__":
    main()
