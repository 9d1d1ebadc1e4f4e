"""Reference files for the GGUF, ggml dequantization and safetensors readers, written into
<fixture_dir>/formats/.

GGUF files are written with gguf-py's GGUFWriter; expected fp32 values come from
gguf.quants.dequantize and layout facts (offsets, data section start) from gguf-py's
GGUFReader, so the C++ readers are checked against an independent implementation.
safetensors files are written with the safetensors package from seeded random torch tensors;
the expected bytes are those tensors' own bytes.

Layout:
  all_types.gguf       metadata of every value type (arrays of strings, nested arrays, 64-bit
                       integers at the edges of their range) and a tensor of every ggml type the
                       project dequantizes, plus IQ2_XXS and I32 tensors it does not; custom
                       alignment 64
  all_types.json       what gguf-py reads from it: metadata (type, value), tensors (type, ne,
                       offset, nbytes, expected file), header facts, gguf-py's table of ggml
                       types and block sizes; expected/<tensor>.f32 holds
                       gguf.quants.dequantize of each dequantizable tensor (raw little-endian fp32)
  dtypes.safetensors   a tensor of every dtype (plus an empty and a scalar one) and __metadata__
  dtypes.json          dtype, shape and expected-bytes file of each (expected_st/<name>.bin)
  single/              model.safetensors of a small checkpoint
  sharded/             the same tensors in two shards with model.safetensors.index.json
  checkpoint.json      tensor name -> dtype, shape, shard, expected-bytes file
  default_model.json   gguf-py's reading of $DMS_DEFAULT_MODEL: header, every tensor, chosen
                       metadata, and expected_default/<tensor>.f32 for a few dequantized tensors
                       (token_embd.weight: only the rows listed)

Usage: make_format_fixtures.py <fixture_dir>
"""
import json
import os
import sys

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from safetensors.torch import save_file

SEED = 20240607
ALIGNMENT = 64

# Byte offsets of the fp16 scale fields inside one K-quant block (ggml's block_qN_K layouts);
# random blocks get finite scales there so every expected value is finite.
K_QUANT_SCALE_FIELDS = {
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


def f32(x):
    """The double that a FLOAT32 field holding x reads back as."""
    return float(np.float32(x))


def metadata_cases(rng):
    """key -> (value type, value, array element type or None) for every GGUF value type."""
    ints = lambda lo, hi, n: [int(v) for v in rng.integers(lo, hi, size=n, endpoint=True)]
    return {
        "test.uint8": (V.UINT8, ints(0, 255, 1)[0], None),
        "test.int8": (V.INT8, ints(-128, -1, 1)[0], None),
        "test.uint16": (V.UINT16, ints(256, 65535, 1)[0], None),
        "test.int16": (V.INT16, ints(-32768, -129, 1)[0], None),
        "test.uint32": (V.UINT32, ints(65536, 2**32 - 1, 1)[0], None),
        "test.int32": (V.INT32, ints(-2**31, -32769, 1)[0], None),
        "test.uint64": (V.UINT64, 2**63 - 1 - ints(0, 1000, 1)[0], None),
        "test.int64": (V.INT64, -2**63 + ints(0, 1000, 1)[0], None),
        "test.float32": (V.FLOAT32, f32(rng.normal() * 1e3), None),
        "test.float64": (V.FLOAT64, float(rng.normal() * 1e-7), None),
        "test.bool_true": (V.BOOL, True, None),
        "test.bool_false": (V.BOOL, False, None),
        "test.string": (V.STRING, "héllo wörld ✓ " + str(ints(0, 10**9, 1)[0]), None),
        "test.array.uint8": (V.ARRAY, ints(0, 255, 7), V.UINT8),
        "test.array.int16": (V.ARRAY, ints(-32768, 32767, 5), V.INT16),
        "test.array.int32": (V.ARRAY, ints(-2**31, 2**31 - 1, 9), V.INT32),
        "test.array.uint64": (V.ARRAY, ints(0, 2**62, 4), V.UINT64),
        "test.array.float32": (V.ARRAY, [f32(v) for v in rng.normal(size=6)], V.FLOAT32),
        "test.array.float64": (V.ARRAY, [float(v) for v in rng.normal(size=3)], V.FLOAT64),
        "test.array.bool": (V.ARRAY, [bool(v) for v in rng.integers(0, 2, size=5)], V.BOOL),
        "test.array.string": (V.ARRAY, ["", "a", "ünïcode ✓", "tab\tnew\nline", "x" * 300], V.STRING),
        "test.array.nested_int": (V.ARRAY, [ints(-100, 100, 3), ints(-100, 100, 1), ints(-100, 100, 2)], V.ARRAY),
        "test.array.nested_string": (V.ARRAY, [["a", "bc"], ["déf"]], V.ARRAY),
    }


def random_k_quant_blocks(rng, qtype, rows, cols):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for pos in K_QUANT_SCALE_FIELDS[qtype]:
        scales = (rng.uniform(-1.0, 1.0, size=n_blocks) * 0.05).astype(np.float16)
        raw[:, pos:pos + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(rows, cols // block_elems * block_bytes)


def tensor_cases(rng):
    """name -> (data to hand GGUFWriter, raw ggml type or None for numpy-typed data)."""
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
    cases = {
        "t.F32": (normal(2, 3, 4, 8), None),
        "t.F16": ((normal(5, 32) * 10).astype(np.float16), None),
        # Every half and bfloat16 bit pattern: zeros, subnormals, infinities and NaNs included.
        "t.F16_all_bits": (np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16), None),
        "t.BF16": (gguf.quants.quantize(normal(7, 16) * 100, Q.BF16), Q.BF16),
        "t.BF16_all_bits": (np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.uint8), Q.BF16),
    }
    for qtype, shape in ((Q.Q4_0, (4, 96)), (Q.Q4_1, (3, 2, 64)), (Q.Q5_0, (4, 96)), (Q.Q5_1, (4, 96)),
                         (Q.Q8_0, (6, 64))):
        # Distinct scales and offsets per block so every block field matters.
        data = normal(*shape) * rng.uniform(0.1, 5.0, size=shape[:-1] + (1,)).astype(np.float32) + 0.5
        cases[f"t.{qtype.name}"] = (gguf.quants.quantize(data, qtype), qtype)
    for qtype in K_QUANT_SCALE_FIELDS:
        cases[f"t.{qtype.name}"] = (random_k_quant_blocks(rng, qtype, 3, 512), qtype)
    cases["t.IQ2_XXS"] = (rng.integers(0, 256, size=(2, 66), dtype=np.uint8), Q.IQ2_XXS)
    cases["t.I32"] = (rng.integers(-1000, 1000, size=(4, 4)).astype(np.int32), None)
    return cases


def json_value(vtype, value, sub_type):
    out = {"type": vtype.name, "value": value}
    if sub_type is not None:
        out["array_type"] = sub_type.name
    return out


def write_all_types_gguf(out_dir, rng):
    path = os.path.join(out_dir, "all_types.gguf")
    writer = gguf.GGUFWriter(path, arch="dmstest")
    writer.add_custom_alignment(ALIGNMENT)
    metadata = metadata_cases(rng)
    for key, (vtype, value, sub_type) in metadata.items():
        writer.add_key_value(key, value, vtype, sub_type=sub_type if sub_type != V.ARRAY else None)
    tensors = tensor_cases(rng)
    for name, (data, raw_type) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(path)
    expected_dir = os.path.join(out_dir, "expected")
    os.makedirs(expected_dir, exist_ok=True)
    manifest_tensors = {}
    for t in reader.tensors:
        entry = {"type": t.tensor_type.name, "ne": [int(n) for n in t.shape],
                 "offset": int(t.data_offset - reader.data_offset), "nbytes": int(t.n_bytes)}
        if t.name not in ("t.IQ2_XXS", "t.I32"):
            values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            assert values.size == t.n_elements, t.name
            entry["expected"] = f"expected/{t.name}.f32"
            values.astype("<f4").tofile(os.path.join(out_dir, entry["expected"]))
        manifest_tensors[t.name] = entry
    assert list(manifest_tensors) == list(tensors), "gguf-py reads back different tensors"

    all_metadata = {key: json_value(*case) for key, case in metadata.items()}
    all_metadata["general.architecture"] = json_value(V.STRING, "dmstest", None)
    all_metadata["general.alignment"] = json_value(V.UINT32, ALIGNMENT, None)
    for key, entry in all_metadata.items():
        field = reader.get_field(key)
        assert field is not None, f"gguf-py does not read back {key}"
        entry["types"] = [t.name for t in field.types]  # the nesting as gguf-py reads it
    first_tensor_field = reader.tensors[0].field
    manifest = {
        "version": int(reader.get_field("GGUF.version").contents()),
        "alignment": ALIGNMENT,
        "tensor_info_start": int(first_tensor_field.offset),
        "data_start": int(reader.data_offset),
        "file_size": os.path.getsize(path),
        "metadata": all_metadata,
        "tensor_order": [t.name for t in reader.tensors],
        "tensors": manifest_tensors,
        "ggml_types": {t.name: {"id": int(t), "block_elems": gguf.GGML_QUANT_SIZES[t][0],
                                "block_bytes": gguf.GGML_QUANT_SIZES[t][1]} for t in Q},
    }
    with open(os.path.join(out_dir, "all_types.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


def random_tensor(gen, dtype, shape):
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=gen, dtype=torch.int64).to(dtype)


def tensor_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def write_expected_bytes(out_dir, subdir, name, t):
    rel = f"{subdir}/{name}.bin"
    os.makedirs(os.path.join(out_dir, subdir), exist_ok=True)
    with open(os.path.join(out_dir, rel), "wb") as f:
        f.write(tensor_bytes(t))
    return rel


ST_DTYPE_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                  torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                  torch.uint8: "U8", torch.bool: "BOOL"}


def write_dtypes_safetensors(out_dir, gen):
    tensors = {}
    for i, dtype in enumerate(ST_DTYPE_NAMES):
        shape = (3, 1 + i, 2) if i % 2 else (5 + i,)
        tensors[f"x.{ST_DTYPE_NAMES[dtype].lower()}"] = random_tensor(gen, dtype, shape)
    tensors["x.empty"] = torch.zeros((0, 3), dtype=torch.float32)
    tensors["x.scalar"] = random_tensor(gen, torch.float32, ())
    metadata = {"format": "pt", "note": "dms format fixture ✓"}
    save_file(tensors, os.path.join(out_dir, "dtypes.safetensors"), metadata=metadata)
    manifest = {"metadata": metadata, "tensors": {
        name: {"dtype": ST_DTYPE_NAMES[t.dtype], "shape": list(t.shape),
               "expected": write_expected_bytes(out_dir, "expected_st", name, t)}
        for name, t in tensors.items()}}
    with open(os.path.join(out_dir, "dtypes.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


def write_checkpoints(out_dir, gen):
    """The same small checkpoint as one file and as two shards with an index."""
    tensors = {
        "model.embed_tokens.weight": random_tensor(gen, torch.bfloat16, (32, 16)),
        "model.layers.0.self_attn.q_proj.weight": random_tensor(gen, torch.float32, (16, 16)),
        "model.layers.0.input_layernorm.weight": random_tensor(gen, torch.float16, (16,)),
        "model.layers.1.self_attn.q_proj.weight": random_tensor(gen, torch.float32, (16, 16)),
        "model.norm.weight": random_tensor(gen, torch.float32, (16,)),
    }
    os.makedirs(os.path.join(out_dir, "single"), exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "single", "model.safetensors"), metadata={"format": "pt"})

    shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    shard_of = {name: shard_names[0] if i < 3 else shard_names[1] for i, name in enumerate(tensors)}
    os.makedirs(os.path.join(out_dir, "sharded"), exist_ok=True)
    for shard in shard_names:
        part = {n: t for n, t in tensors.items() if shard_of[n] == shard}
        save_file(part, os.path.join(out_dir, "sharded", shard), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": shard_of}
    with open(os.path.join(out_dir, "sharded", "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)

    manifest = {name: {"dtype": ST_DTYPE_NAMES[t.dtype], "shape": list(t.shape), "shard": shard_of[name],
                       "expected": write_expected_bytes(out_dir, "expected_ckpt", name, t)}
                for name, t in tensors.items()}
    with open(os.path.join(out_dir, "checkpoint.json"), "w") as f:
        json.dump(manifest, f, indent=1)


DEFAULT_MODEL_SCALARS = [
    "general.architecture", "general.name", "llama.block_count", "llama.context_length",
    "llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
    "llama.attention.head_count_kv", "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
    "llama.vocab_size", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
    "general.quantization_version",
]
DEFAULT_MODEL_ARRAYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"]
DEFAULT_MODEL_DEQUANTIZED = ["blk.0.attn_norm.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight",
                             "blk.29.attn_v.weight", "output_norm.weight"]


def field_value(field):
    vtype = field.types[0]
    value = field.contents()
    if vtype == V.FLOAT32:
        value = f32(value)
    return {"type": vtype.name, "value": value}


def write_default_model(out_dir, rng):
    model = os.environ.get("DMS_DEFAULT_MODEL", "")
    if not model or not os.path.exists(model):
        print(f"make_format_fixtures: DMS_DEFAULT_MODEL={model!r} is missing; the default-model GGUF "
              "tests will fail until it is fetched (scripts/fetch-default-model)", file=sys.stderr)
        return
    reader = gguf.GGUFReader(model)
    expected_dir = os.path.join(out_dir, "expected_default")
    os.makedirs(expected_dir, exist_ok=True)
    tensors = {}
    for t in reader.tensors:
        tensors[t.name] = {"type": t.tensor_type.name, "ne": [int(n) for n in t.shape],
                           "offset": int(t.data_offset - reader.data_offset), "nbytes": int(t.n_bytes)}
    for name in DEFAULT_MODEL_DEQUANTIZED:
        t = next(t for t in reader.tensors if t.name == name)
        rel = f"expected_default/{name}.f32"
        gguf.quants.dequantize(t.data, t.tensor_type).astype("<f4").tofile(os.path.join(out_dir, rel))
        tensors[name]["expected"] = rel
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    n_rows = int(embd.shape[1])
    rows = sorted({0, n_rows - 1, *(int(r) for r in rng.choice(n_rows, size=14, replace=False))})
    rel = "expected_default/token_embd.weight.rows.f32"
    gguf.quants.dequantize(embd.data[rows], embd.tensor_type).astype("<f4").tofile(os.path.join(out_dir, rel))
    tensors["token_embd.weight"]["expected_rows"] = {"rows": rows, "file": rel}

    metadata = {key: field_value(reader.get_field(key)) for key in DEFAULT_MODEL_SCALARS}
    for key in DEFAULT_MODEL_ARRAYS:
        field = reader.get_field(key)
        values = field.contents()
        metadata[key] = {"type": "ARRAY", "array_type": field.types[-1].name, "count": len(values),
                         "first": values[:5], "last": values[-5:]}
    manifest = {
        "path": model,
        "version": int(reader.get_field("GGUF.version").contents()),
        "kv_count": int(reader.get_field("GGUF.kv_count").contents()),
        "data_start": int(reader.data_offset),
        "metadata": metadata,
        "tensor_order": [t.name for t in reader.tensors],
        "tensors": tensors,
    }
    with open(os.path.join(out_dir, "default_model.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = os.path.join(sys.argv[1], "formats")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    gen = torch.Generator().manual_seed(SEED)
    write_all_types_gguf(out_dir, rng)
    write_dtypes_safetensors(out_dir, gen)
    write_checkpoints(out_dir, gen)
    write_default_model(out_dir, rng)


if __name__ == "__main__":
    main()
