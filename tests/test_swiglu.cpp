// SwiGLU's activation (kernels/cpu/swiglu.h) against ATen's silu times up, which transformers' forward
// runs: the same bits (NaN as NaN) on random values of every magnitude and the special ones, for sizes
// with and without a tail after the vector loop, below and above the size ATen splits across threads.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "dms/kernels/cpu/swiglu.h"

namespace dms::test {
namespace {

TEST(Swiglu, SameBitsAsAtenSiluTimesUp) {
  at::manual_seed(5);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {NAN, inf, -inf, 0.0f, -0.0f, 1e-40f, -1e-40f, 88.7f, -88.7f, 104.0f, -104.0f, 3e38f, -3e38f};
  for (int64_t n : {1, 13, 31, 32, 33, 47, 48, 63, 64, 1536, 1550, 8960, 32767, 40000}) {
    SCOPED_TRACE("n " + std::to_string(n));
    const at::Tensor gate = at::randn({n}) * at::exp(3 * at::randn({n})), up = at::randn({n});
    for (int64_t i = 0; i < n; i += 7) gate[i] = specials[(i / 7) % std::size(specials)];
    const at::Tensor want = at::silu(gate) * up;
    const at::Tensor got = gate.clone();
    cpu::swiglu_in_place(got, up);
    const at::Tensor nan = at::isnan(want);
    EXPECT_TRUE(at::equal(at::isnan(got), nan));
    EXPECT_TRUE(at::equal(got.view(at::kInt).masked_select(~nan), want.view(at::kInt).masked_select(~nan)))
        << "largest difference " << (got - want).abs().masked_select(~nan).max().item<float>();
  }
}

}  // namespace
}  // namespace dms::test
