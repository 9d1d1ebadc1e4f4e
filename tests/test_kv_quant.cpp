// 8-bit KV rows (kv_quant.h) against the rule re-derived in plain tensor ops
// (paged_cache_reference.cpp, stored_values), and the rounding error the rule allows.
#include <gtest/gtest.h>

#include <cmath>
#include <iterator>

#include "dms/kernels/cpu/kv_quant.h"
#include "dms/util/error.h"
#include "paged_cache_reference.h"

namespace dms::test {
namespace {

using cpu::kQ8;

TEST(KvQuant, RowBytesCountScales) {
  EXPECT_EQ(cpu::kv_row_bytes(kQ8, 64), 64 + 2 * 2);
  EXPECT_EQ(cpu::kv_row_bytes(kQ8, 128), 128 + 4 * 2);
  EXPECT_EQ(cpu::kv_row_bytes(kQ8, 80), 80 + 2);  // 32 does not divide 80: one scale per row
  EXPECT_EQ(cpu::kv_row_bytes(at::kBFloat16, 64), 128);
  EXPECT_EQ(cpu::kv_row_bytes(at::kFloat, 64), 256);
  EXPECT_THROW(cpu::kv_row_bytes(at::kInt, 64), Error);
  EXPECT_EQ(cpu::kv_dtype_name(kQ8), "q8");
}

// Random rows with a few large channels (as keys after RoPE have), zero groups included.
at::Tensor random_rows(int64_t n, int64_t D, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn({n, D}) * at::exp(2 * at::randn({n, 1}));
  x.index_put_({at::indexing::Slice(), at::indexing::Slice(0, D, 7)}, 30 * at::randn({n, (D + 6) / 7}));
  x.index_put_({0}, 0.0f);
  return x;
}

TEST(KvQuant, RoundTripFollowsTheRule) {
  for (int64_t D : {20, 32, 64, 80, 128}) {
    SCOPED_TRACE("head dim " + std::to_string(D));
    const at::Tensor x = random_rows(257, D, static_cast<uint64_t>(D));
    const at::Tensor rows = cpu::to_kv_rows(x, kQ8);
    ASSERT_EQ(rows.sizes(), (std::vector<int64_t>{257, cpu::kv_row_bytes(kQ8, D)}));
    const at::Tensor back = cpu::kv_rows_to_float(rows, kQ8, D).to(at::kDouble);
    // Same operations in the same fp32 arithmetic: equal to the last bit.
    EXPECT_TRUE(at::equal(back, stored_values(x, kQ8)));
    EXPECT_EQ(back.index({0}).abs().max().item<double>(), 0.0);

    // Each value within half a step of its group's scale (plus the fp16 rounding of the scale,
    // which can push the largest value past level 127).
    const int64_t group = cpu::q8_group(D);
    const at::Tensor absmax = std::get<0>(x.reshape({257, D / group, group}).abs().max(-1, true)).to(at::kDouble);
    const at::Tensor bound = absmax / 254 + absmax * std::ldexp(1.0, -10);
    const at::Tensor err = (back - x.to(at::kDouble)).abs().reshape({257, D / group, group});
    EXPECT_TRUE((err <= bound).all().item<bool>()) << "worst excess " << (err - bound).max().item<double>();
  }
}

// The same values as ATen's conversion (compared as bits, NaN as NaN), in memory of their own: a
// forward may overwrite its q, k, v buffers before the cache stores the rows.
TEST(KvQuant, OtherDtypesAreRoundedCopies) {
  at::Tensor x = random_rows(9, 64, 3);
  // Special values: NaN, infinities, subnormals, the largest float, and halfway cases of bf16
  // (1 + 2^-8 and 1 + 3 * 2^-8 round to even in different directions).
  const float specials[] = {NAN, INFINITY, -INFINITY, 1e-40f, -3e-39f, 3.4e38f, 1.00390625f, 1.01171875f, 65520.0f, -0.0f};
  for (size_t i = 0; i < std::size(specials); ++i) x[1][static_cast<int64_t>(i)] = specials[i];
  const auto bits = [](const at::Tensor& t) { return t.element_size() == 4 ? t.view(at::kInt) : t.view(at::kShort); };
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
    const at::Tensor want = x.to(dtype), nan = at::isnan(want);
    for (const at::Tensor& in : {x, want}) {
      const at::Tensor rows = cpu::to_kv_rows(in, dtype);
      EXPECT_EQ(rows.scalar_type(), dtype);
      EXPECT_TRUE(at::equal(at::isnan(rows), nan)) << c10::toString(dtype);
      EXPECT_TRUE(at::equal(bits(rows).masked_select(~nan), bits(want).masked_select(~nan))) << c10::toString(dtype);
      EXPECT_FALSE(rows.is_alias_of(in));
    }
  }
  EXPECT_THROW(cpu::kv_rows_to_float(at::zeros({2, 67}, at::kChar), kQ8, 64), Error);
}

// Rows made into a kept tensor: its memory is reused only while nothing else holds it, so rows a
// caller still reads never change under it; the values are those of a fresh conversion.
TEST(KvQuant, KeptRowsReuseOnlyFreeMemory) {
  for (auto dtype : {at::kFloat, at::kBFloat16, at::kHalf, kQ8}) {
    SCOPED_TRACE(cpu::kv_dtype_name(dtype));
    const at::Tensor x1 = random_rows(6, 64, 11), x2 = random_rows(6, 64, 12), x3 = random_rows(6, 64, 13);
    at::Tensor kept;
    const void* first = cpu::to_kv_rows(x1, dtype, &kept).data_ptr();
    EXPECT_EQ(kept.data_ptr(), first);
    const at::Tensor r2 = cpu::to_kv_rows(x2, dtype, &kept);  // the rows of x1 were let go
    EXPECT_EQ(r2.data_ptr(), first);
    EXPECT_TRUE(at::equal(r2, cpu::to_kv_rows(x2, dtype)));
    const at::Tensor r3 = cpu::to_kv_rows(x3, dtype, &kept);  // r2 is still held
    EXPECT_NE(r3.data_ptr(), first);
    EXPECT_TRUE(at::equal(r2, cpu::to_kv_rows(x2, dtype)));
    EXPECT_TRUE(at::equal(r3, cpu::to_kv_rows(x3, dtype)));
    EXPECT_TRUE(kept.is_same(r3));
    at::Tensor view;  // only a view of x3's rows is held
    {
      const at::Tensor r3_again = cpu::to_kv_rows(x3, dtype, &kept);  // r3 is held: new memory
      EXPECT_NE(r3_again.data_ptr(), r3.data_ptr());
      view = r3_again.narrow(0, 1, 2);
    }
    const at::Tensor r4 = cpu::to_kv_rows(x1, dtype, &kept);
    EXPECT_NE(r4.data_ptr(), view.data_ptr());
    EXPECT_TRUE(at::equal(view, cpu::to_kv_rows(x3, dtype).narrow(0, 1, 2)));
    EXPECT_TRUE(at::equal(r4, cpu::to_kv_rows(x1, dtype)));
    const at::Tensor other_shape = cpu::to_kv_rows(random_rows(5, 64, 14), dtype, &kept);
    EXPECT_EQ(other_shape.size(0), 5);
    EXPECT_TRUE(at::equal(r3, cpu::to_kv_rows(x3, dtype)));
  }
}

}  // namespace
}  // namespace dms::test
