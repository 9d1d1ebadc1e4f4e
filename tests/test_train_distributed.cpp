// DataParallel over a real c10d TCPStore and Gloo on loopback, with the ranks as threads of
// this process: average() against the mean computed here (and bit-identical on every rank),
// broadcast, barrier, mismatched tensors, from_env's errors for bad variables, a rendezvous that
// times out, and the check: Trainers on two ranks, each with half of every batch,
// end with the weights of one Trainer given the whole batch.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

#include "dms/model/cuda_loader.h"
#include "dms/train/distributed.h"
#include "dms/train/trainer.h"
#include "dms/util/error.h"
#include "test_dms_model_fixtures.h"
#include "test_train_helpers.h"

namespace dms::test {
namespace {

using namespace std::chrono_literals;

// A loopback port nothing listens on right now (the kernel's choice for port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("no free loopback port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Runs body(group) on `world` threads, one rank each, joined on one loopback port; an
// exception on any rank fails the test with its message.
void on_ranks(int world, const std::function<void(DataParallel&)>& body) {
  const int port = free_port();
  std::vector<std::exception_ptr> errors(world);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      try {
        DataParallel dp(r, world, "127.0.0.1", port, 60s);
        body(dp);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r)
    if (errors[r]) {
      try {
        std::rethrow_exception(errors[r]);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << r << ": " << e.what();
      }
    }
}

at::Tensor random(std::vector<int64_t> shape, at::ScalarType dtype, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen, at::kDouble).to(dtype);
}

class DataParallelAverage : public ::testing::TestWithParam<int> {};

// Tensors of mixed shapes and dtypes, one without a gradient on rank 1 (zeros): every rank ends
// with the mean of all ranks' gradients, to the rounding of one sum, and the same bits.
TEST_P(DataParallelAverage, GivesEveryRankTheMeanOfTheGradients) {
  const int world = GetParam();
  const std::vector<std::vector<int64_t>> shapes{{5, 7}, {3}, {2, 3, 4}, {1000}};
  const std::vector<at::ScalarType> dtypes{at::kFloat, at::kDouble, at::kFloat, at::kFloat};
  auto has_grad = [](int rank, size_t i) { return !(rank == 1 && i == 1); };
  std::vector<std::vector<at::Tensor>> grads(world);
  for (int r = 0; r < world; ++r)
    for (size_t i = 0; i < shapes.size(); ++i) grads[r].push_back(random(shapes[i], dtypes[i], 100 * r + i));
  std::vector<at::Tensor> expected;
  for (size_t i = 0; i < shapes.size(); ++i) {
    at::Tensor sum = at::zeros(shapes[i], at::kDouble);
    for (int r = 0; r < world; ++r)
      if (has_grad(r, i)) sum += grads[r][i].to(at::kDouble);
    expected.push_back(sum / world);
  }

  std::vector<std::vector<at::Tensor>> results(world);
  on_ranks(world, [&](DataParallel& dp) {
    const int r = dp.rank();
    std::vector<at::Tensor> trained;
    for (size_t i = 0; i < shapes.size(); ++i) {
      trained.push_back(at::zeros(shapes[i], dtypes[i]).requires_grad_(true));
      if (has_grad(r, i)) trained.back().mutable_grad() = grads[r][i].clone();
    }
    dp.average(trained);
    for (const auto& t : trained) results[r].push_back(t.grad());
  });
  for (int r = 0; r < world; ++r) {
    ASSERT_EQ(results[r].size(), shapes.size()) << "rank " << r;
    for (size_t i = 0; i < shapes.size(); ++i) {
      ASSERT_TRUE(results[r][i].defined()) << "rank " << r << " tensor " << i;
      EXPECT_EQ(results[r][i].scalar_type(), dtypes[i]);
      // One sum of `world` values in the tensor's dtype: a few ulps of values of size ~3.
      const double tol = dtypes[i] == at::kFloat ? 2e-6 : 1e-14;
      EXPECT_LT((results[r][i].to(at::kDouble) - expected[i]).abs().max().item<double>(), tol)
          << "rank " << r << " tensor " << i;
      EXPECT_TRUE(at::equal(results[r][i], results[0][i])) << "rank " << r << " differs from rank 0, tensor " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, DataParallelAverage, ::testing::Values(2, 3));

TEST(DataParallel, BroadcastCopiesTheRootsTensorsEverywhere) {
  const int world = 3, root = 1;
  std::vector<std::vector<at::Tensor>> results(world);
  on_ranks(world, [&](DataParallel& dp) {
    const int r = dp.rank();
    // A leaf that requires grad (a trained tensor) and tensors of other dtypes.
    std::vector<at::Tensor> t{random({4, 6}, at::kFloat, 10 + r).requires_grad_(true),
                              random({9}, at::kDouble, 20 + r), random({3, 3}, at::kBFloat16, 30 + r)};
    dp.broadcast(t, root);
    results[r] = t;
  });
  for (int r = 0; r < world; ++r)
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_EQ(results[r].size(), 3u);
      EXPECT_TRUE(at::equal(results[r][i], results[root][i])) << "rank " << r << " tensor " << i;
    }
  EXPECT_TRUE(at::equal(results[0][0].detach(), random({4, 6}, at::kFloat, 10 + root)));
  EXPECT_TRUE(results[0][0].requires_grad());
}

TEST(DataParallel, BarrierWaitsForEveryRank) {
  std::atomic<bool> late_rank_arrived{false};
  std::atomic<bool> passed_early{false};
  on_ranks(2, [&](DataParallel& dp) {
    if (dp.rank() == 1) {
      std::this_thread::sleep_for(300ms);
      late_rank_arrived = true;
    }
    dp.barrier();
    if (dp.rank() == 0 && !late_rank_arrived) passed_early = true;
  });
  EXPECT_FALSE(passed_early);
}

TEST(DataParallel, DifferentTensorsOnTheRanksAreAnErrorEverywhere) {
  std::vector<std::string> messages(2);
  on_ranks(2, [&](DataParallel& dp) {
    at::Tensor t = at::zeros({dp.rank() == 0 ? 4 : 5}).requires_grad_(true);
    t.mutable_grad() = at::ones_like(t);
    try {
      dp.average({t});
    } catch (const Error& e) {
      messages[dp.rank()] = e.what();
    }
  });
  for (const auto& m : messages) EXPECT_NE(m.find("different tensors"), std::string::npos) << m;
}

TEST(DataParallel, NcclNeedsACudaDeviceThisMachineHas) {
  std::vector<std::string> not_cuda(2), missing(2);
  on_ranks(2, [&](DataParallel& dp) {
    not_cuda[dp.rank()] = error_of([&] { dp.use_nccl(at::kCPU); });
    if (!cuda_available()) missing[dp.rank()] = error_of([&] { dp.use_nccl(at::Device(at::kCUDA, dp.rank())); });
    // The group still works through Gloo.
    EXPECT_EQ(dp.mean({1.0 + dp.rank()}), std::vector<double>{1.5});
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(not_cuda[r].find("NCCL needs a CUDA device with an index, not cpu"), std::string::npos) << not_cuda[r];
    if (!cuda_available()) EXPECT_NE(missing[r].find("no CUDA device is available"), std::string::npos) << missing[r];
  }
}

// With two GPUs: ranks on cuda:0 and cuda:1 average and broadcast through NCCL, tensors
// staying on their GPUs, with the results Gloo gives on the CPU.
TEST(DataParallelNccl, AveragesAndBroadcastsOnTheGpus) {
  if (!cuda_available() || at::getNumGPUs() < 2) GTEST_SKIP() << "needs two CUDA devices";
  const int world = 2;
  const std::vector<std::vector<int64_t>> shapes{{5, 7}, {1000}, {3}};
  const std::vector<at::ScalarType> dtypes{at::kFloat, at::kFloat, at::kDouble};
  std::vector<std::vector<at::Tensor>> averaged(world), broadcast(world);
  on_ranks(world, [&](DataParallel& dp) {
    const int r = dp.rank();
    const at::Device gpu(at::kCUDA, r);
    EXPECT_TRUE(dp.use_nccl(gpu)) << "this build has no NCCL";
    std::vector<at::Tensor> trained, sent;
    for (size_t i = 0; i < shapes.size(); ++i) {
      trained.push_back(at::zeros(shapes[i], at::TensorOptions(dtypes[i]).device(gpu)).requires_grad_(true));
      trained.back().mutable_grad() = random(shapes[i], dtypes[i], 100 * r + i).to(gpu);
      sent.push_back(random(shapes[i], dtypes[i], 200 + 10 * r + i).to(gpu));
    }
    dp.average(trained);
    dp.broadcast(sent, 1);
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_EQ(trained[i].grad().device(), gpu);
      EXPECT_EQ(sent[i].device(), gpu);
      averaged[r].push_back(trained[i].grad().cpu());
      broadcast[r].push_back(sent[i].cpu());
    }
  });
  for (size_t i = 0; i < shapes.size(); ++i) {
    const at::Tensor expected = (random(shapes[i], at::kDouble, i) + random(shapes[i], at::kDouble, 100 + i)) / 2;
    const double tol = dtypes[i] == at::kFloat ? 2e-6 : 1e-14;
    for (int r = 0; r < world; ++r) {
      EXPECT_LT((averaged[r][i].to(at::kDouble) - expected).abs().max().item<double>(), tol) << "rank " << r;
      EXPECT_TRUE(at::equal(averaged[r][i], averaged[0][i])) << "rank " << r << " tensor " << i;
      EXPECT_TRUE(at::equal(broadcast[r][i], random(shapes[i], dtypes[i], 210 + i))) << "rank " << r << " tensor " << i;
    }
  }
}

TEST(DataParallel, BadArgumentsAreErrors) {
  EXPECT_THROW(DataParallel(2, 2, "127.0.0.1", 29500), Error);
  EXPECT_THROW(DataParallel(0, 0, "127.0.0.1", 29500), Error);
  EXPECT_THROW(DataParallel(0, 2, "", 29500), Error);
  EXPECT_THROW(DataParallel(0, 2, "127.0.0.1", 0), Error);
}

TEST(DataParallel, ARendezvousWithoutTheOtherRanksTimesOut) {
  const int port = free_port();
  const auto start = std::chrono::steady_clock::now();
  try {
    DataParallel dp(1, 2, "127.0.0.1", port, 1500ms);  // nobody serves the store
    ADD_FAILURE() << "joined a group with no rank 0";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << m;
    EXPECT_NE(m.find("could not join"), std::string::npos) << m;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 30s);
}

// Sets the torchrun variables for one test and restores what was there before.
class EnvGuard {
 public:
  EnvGuard() {
    for (const char* name : kNames)
      if (const char* v = std::getenv(name)) saved_.emplace_back(name, std::string(v));
      else saved_.emplace_back(name, std::nullopt);
  }
  ~EnvGuard() {
    for (const auto& [name, value] : saved_)
      if (value) ::setenv(name, value->c_str(), 1);
      else ::unsetenv(name);
  }
  void set(const std::vector<std::pair<const char*, const char*>>& vars) {
    for (const char* name : kNames) ::unsetenv(name);
    for (const auto& [name, value] : vars) ::setenv(name, value, 1);
  }

 private:
  static constexpr const char* kNames[] = {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"};
  std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

std::string from_env_error() {
  try {
    DataParallel::from_env();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(DataParallelFromEnv, NoWorldSizeOrOneProcessIsNoGroup) {
  EnvGuard env;
  env.set({});
  EXPECT_EQ(DataParallel::from_env(), nullptr);
  env.set({{"WORLD_SIZE", "1"}, {"RANK", "0"}});
  EXPECT_EQ(DataParallel::from_env(), nullptr);
}

TEST(DataParallelFromEnv, BadVariablesAreErrorsNamingThem) {
  EnvGuard env;
  const std::pair<const char*, const char*> world{"WORLD_SIZE", "2"}, rank{"RANK", "1"},
      addr{"MASTER_ADDR", "127.0.0.1"}, port{"MASTER_PORT", "29500"};
  struct Case {
    std::vector<std::pair<const char*, const char*>> vars;
    const char* named;
  };
  const std::vector<Case> cases{
      {{{"WORLD_SIZE", "two"}, rank, addr, port}, "WORLD_SIZE"},
      {{{"WORLD_SIZE", "0"}, rank, addr, port}, "WORLD_SIZE"},
      {{{"WORLD_SIZE", "2x"}, rank, addr, port}, "WORLD_SIZE"},
      {{world, addr, port}, "RANK"},
      {{world, {"RANK", "2"}, addr, port}, "RANK"},
      {{world, {"RANK", "-1"}, addr, port}, "RANK"},
      {{world, {"RANK", ""}, addr, port}, "RANK"},
      {{world, rank, port}, "MASTER_ADDR"},
      {{world, rank, addr}, "MASTER_PORT"},
      {{world, rank, addr, {"MASTER_PORT", "70000"}}, "MASTER_PORT"},
      {{world, rank, addr, {"MASTER_PORT", "http"}}, "MASTER_PORT"},
      {{world, rank, addr, port, {"LOCAL_RANK", "z"}}, "LOCAL_RANK"},
  };
  for (const auto& c : cases) {
    env.set(c.vars);
    const std::string m = from_env_error();
    EXPECT_NE(m.find(std::string("environment variable ") + c.named), std::string::npos) << c.named << ": " << m;
  }
}

// Rank 0 joins from the variables while rank 1 joins with explicit arguments.
TEST(DataParallelFromEnv, JoinsTheGroupTheVariablesName) {
  EnvGuard env;
  const std::string port = std::to_string(free_port());
  env.set({{"WORLD_SIZE", "2"}, {"RANK", "0"}, {"LOCAL_RANK", "0"}, {"MASTER_ADDR", "127.0.0.1"},
           {"MASTER_PORT", port.c_str()}});
  std::exception_ptr other_error;
  at::Tensor other = at::full({3}, 7.0);
  std::thread other_rank([&] {
    try {
      DataParallel dp(1, 2, "127.0.0.1", std::stoi(port), 60s);
      dp.broadcast({other});
    } catch (...) {
      other_error = std::current_exception();
    }
  });
  try {
    auto dp = DataParallel::from_env();
    ASSERT_NE(dp, nullptr);
    EXPECT_EQ(dp->rank(), 0);
    EXPECT_EQ(dp->world(), 2);
    EXPECT_EQ(dp->local_rank(), 0);
    dp->broadcast({at::full({3}, 5.0)});
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  other_rank.join();
  EXPECT_FALSE(other_error);
  EXPECT_TRUE(at::equal(other, at::full({3}, 5.0)));
}

// The sequences [first, first + n) of `batch` as a batch of their own, keyed in the step by
// their index there.
TrainBatch sequences(const TrainBatch& batch, int64_t first, int64_t n) {
  auto part = [&](const at::Tensor& t) { return t.view({batch.batch, batch.seq_len}).narrow(0, first, n); };
  TrainBatch b = make_train_batch(part(batch.tokens), part(batch.documents), part(batch.counted));
  b.first_sequence = first;
  return b;
}

// The check. Each rank gets two of the step's four sequences with first_sequence as
// trainer.h says, both halves with the same number of counted rows (the losses are means over
// a micro-batch's rows, so the mean of the halves' gradients is then the whole batch's) and the
// compression loss active in both (it is a hinge).
TEST(DataParallelTrainer, TwoRanksWithHalfTheBatchEachTrainAsOneWithTheWholeBatch) {
  const TinyModelSpec spec;  // a Llama without decision heads: the trainer adds fresh ones
  const Transformer model = tiny_model(spec, at::kFloat);
  TrainerOptions o;
  o.dms.window = 3;
  o.schedule = {.start = 8, .end = 8};
  o.adamw.lr = 1e-2;
  o.seed = 11;
  const int world = 2, per_rank = 2, steps = 4;
  std::vector<TrainBatch> data;
  for (uint64_t s = 0; s < steps; ++s)
    data.push_back(packed_batch({{16, 4}, {24}, {20}, {12, 12}}, 24, spec.vocab, 40 + s));
  for (const auto& b : data)
    ASSERT_EQ(sequences(b, 0, per_rank).counted_rows(), sequences(b, per_rank, per_rank).counted_rows());

  Trainer whole(model.config(), model.weights(), o);
  std::vector<StepResult> whole_results;
  for (const auto& b : data) whole_results.push_back(whole.step(b));

  std::vector<std::vector<at::Tensor>> rank_weights(world);
  std::vector<std::vector<StepResult>> rank_results(world);
  on_ranks(world, [&](DataParallel& dp) {
    TrainerOptions ro = o;
    ro.reduce_gradients = [&dp](const std::vector<at::Tensor>& t) { dp.average(t); };
    Trainer trainer(model.config(), model.weights(), ro);
    for (const auto& b : data) rank_results[dp.rank()].push_back(trainer.step(sequences(b, dp.rank() * per_rank, per_rank)));
    for (const auto& t : trainer.trained()) rank_weights[dp.rank()].push_back(t.detach().clone());
  });
  ASSERT_EQ(rank_weights[0].size(), whole.trained().size());
  ASSERT_EQ(rank_weights[1].size(), whole.trained().size());

  for (int s = 0; s < steps; ++s) {
    for (int r = 0; r < world; ++r) EXPECT_GT(rank_results[r][s].compress, 0) << "step " << s << " rank " << r;
    // The whole batch's frac is the mean of the halves' (equal counted rows): the same noise.
    EXPECT_NEAR(whole_results[s].frac, (rank_results[0][s].frac + rank_results[1][s].frac) / 2, 1e-6) << "step " << s;
    // The averaged gradient is the whole batch's, so the clipping norm is too: to fp32 rounding
    // at the first step (measured 1e-9 relative); later steps see weights that differ by the
    // rounding of earlier ones, which AdamW's normalisation magnifies in near-zero gradient
    // components (measured up to 9e-5 relative).
    const double rel = std::abs(rank_results[0][s].grad_norm - whole_results[s].grad_norm) / whole_results[s].grad_norm;
    std::cout << "step " << s << ": gradient norm relative difference " << rel << "\n";
    EXPECT_LT(rel, s == 0 ? 1e-5 : 1e-3) << "step " << s;
    EXPECT_EQ(rank_results[0][s].grad_norm, rank_results[1][s].grad_norm) << "step " << s;
  }
  double worst = 0;
  for (size_t i = 0; i < whole.trained().size(); ++i) {
    EXPECT_TRUE(at::equal(rank_weights[0][i], rank_weights[1][i])) << "ranks drifted apart: " << whole.trained_names()[i];
    const double err = (rank_weights[0][i] - whole.trained()[i].detach()).abs().max().item<double>();
    worst = std::max(worst, err);
    // Measured 3.2e-6 (four steps at lr 1e-2, fp32; the gradient norms above).
    EXPECT_LT(err, 1e-5) << whole.trained_names()[i];
  }
  RecordProperty("max_weight_difference", std::to_string(worst));
  std::cout << "two ranks vs one process, largest weight difference after " << steps << " steps: " << worst << "\n";
}

}  // namespace
}  // namespace dms::test
