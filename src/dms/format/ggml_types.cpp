#include "dms/format/ggml_types.h"

#include <array>

#include "dms/util/error.h"

namespace dms {
namespace {

struct TypeTraits {
  const char* name = nullptr;   // nullptr: a value ggml does not define
  int64_t block_elems = 0;
  size_t block_bytes = 0;
  bool dequantizable = false;
};

constexpr int64_t QK_K = 256;   // super-block size of the K-quants and most IQ types

// Geometry as ggml's type traits define it (the same table as gguf-py's GGML_QUANT_SIZES).
constexpr std::array<TypeTraits, 42> kTraits = [] {
  std::array<TypeTraits, 42> t{};
  auto set = [&t](GgmlType type, const char* name, int64_t elems, size_t bytes, bool deq) {
    t[static_cast<size_t>(type)] = {name, elems, bytes, deq};
  };
  set(GgmlType::F32, "F32", 1, 4, true);
  set(GgmlType::F16, "F16", 1, 2, true);
  set(GgmlType::Q4_0, "Q4_0", 32, 2 + 16, true);
  set(GgmlType::Q4_1, "Q4_1", 32, 2 + 2 + 16, true);
  set(GgmlType::Q5_0, "Q5_0", 32, 2 + 4 + 16, true);
  set(GgmlType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16, true);
  set(GgmlType::Q8_0, "Q8_0", 32, 2 + 32, true);
  set(GgmlType::Q8_1, "Q8_1", 32, 4 + 4 + 32, false);
  set(GgmlType::Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, true);
  set(GgmlType::Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true);
  set(GgmlType::Q4_K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12, true);
  set(GgmlType::Q5_K, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12, true);
  set(GgmlType::Q6_K, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, true);
  set(GgmlType::Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, false);
  set(GgmlType::IQ2_XXS, "IQ2_XXS", QK_K, 2 + QK_K / 4, false);
  set(GgmlType::IQ2_XS, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, false);
  set(GgmlType::IQ3_XXS, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, false);
  set(GgmlType::IQ1_S, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, false);
  set(GgmlType::IQ4_NL, "IQ4_NL", 32, 2 + 16, false);
  set(GgmlType::IQ3_S, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, false);
  set(GgmlType::IQ2_S, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, false);
  set(GgmlType::IQ4_XS, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, false);
  set(GgmlType::I8, "I8", 1, 1, false);
  set(GgmlType::I16, "I16", 1, 2, false);
  set(GgmlType::I32, "I32", 1, 4, false);
  set(GgmlType::I64, "I64", 1, 8, false);
  set(GgmlType::F64, "F64", 1, 8, false);
  set(GgmlType::IQ1_M, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, false);
  set(GgmlType::BF16, "BF16", 1, 2, true);
  set(GgmlType::TQ1_0, "TQ1_0", QK_K, 2 + 4 * 13, false);
  set(GgmlType::TQ2_0, "TQ2_0", QK_K, 2 + 64, false);
  set(GgmlType::MXFP4, "MXFP4", 32, 1 + 16, false);
  set(GgmlType::NVFP4, "NVFP4", 64, 4 + 32, false);
  set(GgmlType::Q1_0, "Q1_0", 128, 2 + 16, false);
  return t;
}();

const TypeTraits* find_traits(GgmlType t) {
  const auto raw = static_cast<uint32_t>(t);
  if (raw >= kTraits.size() || kTraits[raw].name == nullptr) return nullptr;
  return &kTraits[raw];
}

const TypeTraits& traits(GgmlType t) {
  const TypeTraits* tr = find_traits(t);
  if (!tr) fail("ggml", "unknown tensor type " + std::to_string(static_cast<uint32_t>(t)));
  return *tr;
}

}  // namespace

std::string ggml_type_name(GgmlType t) {
  const TypeTraits* tr = find_traits(t);
  return tr ? tr->name : "type " + std::to_string(static_cast<uint32_t>(t));
}

bool ggml_type_known(uint32_t raw) { return find_traits(static_cast<GgmlType>(raw)) != nullptr; }

bool ggml_type_dequantizable(GgmlType t) {
  const TypeTraits* tr = find_traits(t);
  return tr && tr->dequantizable;
}

int64_t ggml_block_elems(GgmlType t) { return traits(t).block_elems; }

size_t ggml_block_bytes(GgmlType t) { return traits(t).block_bytes; }

size_t ggml_row_bytes(GgmlType t, int64_t n) {
  const TypeTraits& tr = traits(t);
  return static_cast<size_t>(n / tr.block_elems) * tr.block_bytes;
}

}  // namespace dms
