// Shared pieces of the quantized-weight tests: random ggml blocks of every type (scales zero,
// subnormal and at fp16's extremes among ordinary ones), the fp64-derived bound each element's
// products carry, activations of varied magnitude, the ISAs this CPU runs, and packed copies.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "dms/format/ggml_types.h"
#include "dms/kernels/cpu/quant_matmul.h"

namespace dms::test {

// Where a type's fp16 scale fields are in a block (the test writes chosen values there; every
// other byte is random), and a bound `coef` on the integer factor any float term of the kernels
// carries per element: max |sub-scale| * (max level + offset), e.g. Q4_K 63 * 15, Q4_0 15 + 8
// (levels and offsets may be summed separately). Times the sum of |fields| of the element's block,
// it bounds every partial product a kernel forms for that element.
struct TypeSpec {
  GgmlType type;
  std::vector<int> half_fields;
  double coef;
};

const std::vector<TypeSpec>& type_specs();
bool is_16_bit(GgmlType t);

struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // dequantize_row of every row
  std::vector<double> bound;  // per element: coef * sum of |scale fields| of its block
  cpu::QuantMatrix matrix;
};

// Random blocks (every byte random, the scale fields chosen), dequantized row by row.
Weights random_weights(const TypeSpec& spec, int64_t rows, int64_t cols, std::mt19937_64& rng);
// Activations with magnitudes varying by block (10^-3 .. 10), some all-zero blocks, some outliers.
std::vector<float> random_activations(int64_t n, int64_t cols, std::mt19937_64& rng);

// The ISA levels this CPU runs, scalar first.
std::vector<cpu::CpuIsa> supported_isas();

// w's matrix packed by quant_pack, in storage of its own.
struct PackedCopy {
  std::vector<uint8_t> bytes;
  cpu::QuantMatrix matrix;
};

PackedCopy packed(const Weights& w);
bool packs(const TypeSpec& spec);

}  // namespace dms::test
