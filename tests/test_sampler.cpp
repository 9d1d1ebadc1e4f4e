// Sampler: the filtered distribution against a plain re-derivation, draws against that
// distribution, and seeding.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "dms/engine/sampler.h"
#include "dms/util/error.h"

namespace dms {
namespace {

// Temperature, then top-k, top-p and min-p, written out over plain vectors in double.
std::vector<double> reference_distribution(const std::vector<float>& logits, const SamplingParams& p) {
  const size_t V = logits.size();
  std::vector<double> x(logits.begin(), logits.end());
  std::vector<size_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] > x[b]; });
  std::vector<bool> keep(V, true);
  if (p.top_k > 0)
    for (size_t r = static_cast<size_t>(p.top_k); r < V; ++r) keep[order[r]] = false;
  std::vector<double> prob(V, 0.0);
  double z = 0;
  for (size_t i = 0; i < V; ++i)
    if (keep[i]) z += std::exp(x[i] / p.temperature);
  for (size_t i = 0; i < V; ++i)
    if (keep[i]) prob[i] = std::exp(x[i] / p.temperature) / z;
  double before = 0;
  for (size_t r = 0; r < V; ++r) {
    const size_t i = order[r];
    if (before >= p.top_p) prob[i] = 0;
    before += prob[i];
  }
  const double top = *std::max_element(prob.begin(), prob.end());
  for (auto& q : prob)
    if (q < p.min_p * top) q = 0;
  const double sum = std::accumulate(prob.begin(), prob.end(), 0.0);
  for (auto& q : prob) q /= sum;
  return prob;
}

std::vector<float> random_logits(std::mt19937& rng, int64_t V) {
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<float> v(V);
  for (auto& x : v) x = n(rng);
  return v;
}

at::Tensor as_tensor(const std::vector<float>& v) { return at::tensor(v, at::kFloat); }

TEST(Sampler, GreedyIsArgmax) {
  std::mt19937 rng(1);
  Sampler s(SamplingParams{});
  for (int trial = 0; trial < 20; ++trial) {
    auto v = random_logits(rng, 1000);
    const int32_t expect = static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
    EXPECT_EQ(s.sample(as_tensor(v)), expect);
  }
}

// Ties go to the first index, a NaN wins from where it first appears (as at::argmax), and
// -inf logits and a single token work.
TEST(Sampler, GreedyTiesAndNaN) {
  Sampler s(SamplingParams{});
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  const std::vector<std::vector<float>> cases = {
      {1, 3, 3, 2}, {3, 1, 3}, {-inf, -inf}, {-inf, 2, inf, inf}, {1, nan, 5, nan}, {nan, 9}, {7}, {0, -0.0f}};
  for (const auto& v : cases) {
    const auto t = as_tensor(v);
    EXPECT_EQ(s.sample(t), t.argmax().item<int64_t>());
  }
  EXPECT_EQ(s.sample(as_tensor({1, 3, 3, 2})), 1);
  EXPECT_EQ(s.sample(as_tensor({1, nan, 5, nan})), 1);
  // Longer rows (the 4-lane pass and its tail): the maximum repeated later, NaN in a lane, -inf.
  std::mt19937 rng(5);
  for (int64_t n : {5, 7, 8, 13, 49152}) {
    for (int trial = 0; trial < 6; ++trial) {
      std::vector<float> v(static_cast<size_t>(n));
      for (float& x : v) x = std::uniform_real_distribution<float>(-30, 30)(rng);
      const auto at = [&] { return static_cast<size_t>(std::uniform_int_distribution<int64_t>(0, n - 1)(rng)); };
      if (trial >= 1) v[at()] = v[at()] = 31;  // ties
      if (trial == 2) v[at()] = inf;
      if (trial >= 3) v[at()] = nan;
      if (trial == 4) v[n - 1] = nan;
      if (trial == 5) v.assign(v.size(), -inf);
      const auto t = as_tensor(v);
      EXPECT_EQ(s.sample(t), t.argmax().item<int64_t>()) << "n = " << n << ", trial " << trial;
    }
  }
}

TEST(Sampler, FilteredDistributionMatchesReference) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 200; ++trial) {
    SamplingParams p;
    p.temperature = 0.2 + 1.8 * u(rng);
    p.top_k = trial % 3 == 0 ? 0 : 1 + static_cast<int64_t>(u(rng) * 40);
    p.top_p = trial % 4 == 0 ? 1.0 : 0.05 + 0.95 * u(rng);
    p.min_p = trial % 5 == 0 ? 0.0 : 0.3 * u(rng);
    // Vocabularies past 64 and 256 tokens, where top-p's prefix may end beyond the first tokens sorted.
    auto v = random_logits(rng, std::array<int, 3>{64, 300, 3000}[trial % 3]);
    auto expect = reference_distribution(v, p);
    auto got = Sampler(p).probabilities(as_tensor(v)).contiguous();
    const float* g = got.data_ptr<float>();
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_NEAR(g[i], expect[i], 1e-5)
          << "token " << i << " T=" << p.temperature << " k=" << p.top_k << " p=" << p.top_p << " min_p=" << p.min_p;
  }
}

TEST(Sampler, DrawsFollowTheDistribution) {
  std::mt19937 rng(3);
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.95;
  p.seed = 42;
  auto v = random_logits(rng, 10);
  auto expect = reference_distribution(v, p);
  Sampler s(p);
  const int n = 40000;
  std::vector<int> count(v.size(), 0);
  for (int i = 0; i < n; ++i) ++count[s.sample(as_tensor(v))];
  for (size_t i = 0; i < v.size(); ++i) {
    // Five standard deviations of a binomial count: fails by chance about once in 10^6 runs.
    const double sd = std::sqrt(n * expect[i] * (1 - expect[i]));
    EXPECT_NEAR(count[i], n * expect[i], 5 * sd + 1) << "token " << i;
    if (expect[i] == 0) EXPECT_EQ(count[i], 0) << "token " << i << " was filtered out but drawn";
  }
}

TEST(Sampler, SeedMakesDrawsReproducible) {
  std::mt19937 rng(4);
  auto v = as_tensor(random_logits(rng, 500));
  SamplingParams p;
  p.temperature = 1.5;
  p.top_p = 1.0;
  p.min_p = 0.0;
  auto draws = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.sample(v));
    return out;
  };
  EXPECT_EQ(draws(7), draws(7));
  EXPECT_NE(draws(7), draws(8));
}

TEST(Sampler, RejectsOutOfRangeSettings) {
  auto bad = [](auto edit, const char* flag) {
    SamplingParams p;
    edit(p);
    try {
      Sampler s(p);
      ADD_FAILURE() << flag << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
    }
  };
  bad([](SamplingParams& p) { p.temperature = -1; }, "--temperature");
  bad([](SamplingParams& p) { p.top_k = -3; }, "--top-k");
  bad([](SamplingParams& p) { p.top_p = 0; }, "--top-p");
  bad([](SamplingParams& p) { p.top_p = 1.5; }, "--top-p");
  bad([](SamplingParams& p) { p.min_p = 2; }, "--min-p");
}

}  // namespace
}  // namespace dms
