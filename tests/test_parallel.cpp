// The decode kernels' thread team (kernels/cpu/parallel.h), inside a TeamScope: every chunk runs
// exactly once, on several threads, for thread counts up to more than the cores; regions right
// after each other and after the workers have gone to sleep; an exception in any chunk reaches the
// caller and leaves the team usable; two callers at once and a region inside a region each still
// run every chunk once; a child of fork() gets a team of its own. Which threads run a region inside
// and outside a scope, and the scope's one-thread OpenMP and MKL, restored when it ends.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dms/kernels/cpu/parallel.h"

namespace dms::test {
namespace {

// Restores libtorch's thread count at the end of a test.
struct ThreadCount {
  int saved = at::get_num_threads();
  explicit ThreadCount(int n) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved); }
};

// Runs parallel_chunks over [0, n) on the team and checks that each index was visited once, in
// chunks of the asked size; returns how many threads took part.
size_t check_chunks(int64_t n, int64_t chunk) {
  std::vector<std::atomic<int>> visits(static_cast<size_t>(n));
  std::mutex mu;
  std::set<std::thread::id> threads;
  const cpu::TeamScope team(true);
  cpu::parallel_chunks(n, chunk, [&](int64_t begin, int64_t end) {
    EXPECT_EQ(begin % chunk, 0);
    EXPECT_EQ(end, std::min(n, begin + chunk));
    for (int64_t i = begin; i < end; ++i) visits[i].fetch_add(1);
    std::this_thread::sleep_for(std::chrono::microseconds(50));  // every thread gets to take a chunk
    std::lock_guard<std::mutex> lock(mu);
    threads.insert(std::this_thread::get_id());
  });
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(visits[i].load(), 1) << "index " << i << " of " << n;
  return threads.size();
}

TEST(ThreadTeam, RunsEveryChunkOnceOnSeveralThreads) {
  std::mt19937 rng(3);
  for (int threads : {2, 3, 5}) {
    ThreadCount count(threads);
    for (int round = 0; round < 200; ++round) {
      const int64_t n = std::uniform_int_distribution<int64_t>(1, 300)(rng);
      const int64_t chunk = std::uniform_int_distribution<int64_t>(1, 40)(rng);
      const size_t used = check_chunks(n, chunk);
      EXPECT_LE(used, static_cast<size_t>(std::min<int64_t>(threads, (n + chunk - 1) / chunk)));
      if ((n + chunk - 1) / chunk >= 4 * threads) {
        EXPECT_GT(used, 1u) << "n " << n << " chunk " << chunk;
      }
    }
  }
}

// Outside a TeamScope every region runs on OpenMP; inside one, on the team, and one that asks for
// OpenMP (BLAS work) runs on the calling thread alone, OpenMP being pinned to it.
TEST(ThreadTeam, RegionsOutsideATeamScopeRunOnOpenMP) {
  ThreadCount count(2);
  for (bool scope : {false, true}) {
    const cpu::TeamScope team(scope);
    for (cpu::Threads where : {cpu::Threads::Team, cpu::Threads::OpenMP}) {
      std::atomic<int> on_team{0}, on_openmp{0}, on_caller{0};
      const auto caller = std::this_thread::get_id();
      cpu::parallel_chunks(
          64, 1,
          [&](int64_t, int64_t) {
            on_team += cpu::in_team();
            on_openmp += at::in_parallel_region();
            on_caller += std::this_thread::get_id() == caller;
            std::this_thread::sleep_for(std::chrono::microseconds(50));
          },
          where);
      const bool openmp = where == cpu::Threads::OpenMP;
      SCOPED_TRACE("scope " + std::to_string(scope) + ", OpenMP asked " + std::to_string(openmp));
      if (!scope) {
        EXPECT_EQ(on_openmp.load(), 64);
        EXPECT_EQ(on_team.load(), 0);
        EXPECT_LT(on_caller.load(), 64);
      } else if (where == cpu::Threads::Team) {
        EXPECT_EQ(on_team.load(), 64);
        EXPECT_EQ(on_openmp.load(), 0);
        EXPECT_LT(on_caller.load(), 64);
      } else {
        EXPECT_EQ(on_caller.load(), 64);
        EXPECT_EQ(on_openmp.load() + on_team.load(), 0);
      }
    }
  }
}

// Inside a TeamScope the thread's OpenMP and MKL counts are 1 (no ATen op or MKL function starts
// OpenMP threads beside the team) while regions get libtorch's count; all of it comes back after.
TEST(ThreadTeam, ScopePinsOpenMPAndMklToOneThreadUntilItEnds) {
  ThreadCount count(2);
  const at::Tensor x = at::randn({1 << 18});
  const at::Tensor want = at::sin(x);  // MKL's VML, on OpenMP threads
  {
    const cpu::TeamScope team(true);
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_EQ(cpu::region_threads(), 2);
    int pieces = 0;
    at::parallel_for(0, 1 << 20, 1, [&](int64_t, int64_t) { ++pieces; });
    EXPECT_EQ(pieces, 1);
    EXPECT_TRUE(at::equal(at::sin(x), want));  // the same bits on one thread
    {
      const cpu::TeamScope inner(true);
      EXPECT_EQ(cpu::region_threads(), 2);
    }
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_GT(check_chunks(64, 1), 1u);  // regions still use both threads
  }
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(cpu::region_threads(), 2);
  EXPECT_FALSE(cpu::in_team_scope());
  const cpu::TeamScope off(false);
  EXPECT_FALSE(cpu::in_team_scope());
  EXPECT_EQ(at::get_num_threads(), 2);
}

TEST(ThreadTeam, WakesWorkersThatWentToSleep) {
  ThreadCount count(3);
  for (int round = 0; round < 6; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(round % 2 ? 30 : 1));  // past the spin: asleep
    EXPECT_GT(check_chunks(64, 1), 1u);
  }
}

TEST(ThreadTeam, SplitsAsAtParallelFor) {
  ThreadCount count(4);
  const std::vector<std::array<int64_t, 3>> cases{{0, 10, 16}, {5, 105, 16}, {3, 4, 1}, {0, 97, 1}};
  for (auto [begin, end, grain] : cases) {
    std::vector<std::pair<int64_t, int64_t>> ours, theirs;
    std::mutex mu;
    {
      const cpu::TeamScope team(true);
      cpu::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
        std::lock_guard<std::mutex> lock(mu);
        ours.emplace_back(b, e);
      });
    }
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      theirs.emplace_back(b, e);
    });
    std::sort(ours.begin(), ours.end());
    std::sort(theirs.begin(), theirs.end());
    EXPECT_EQ(ours, theirs) << begin << ".." << end << " grain " << grain;
  }
}

TEST(ThreadTeam, ExceptionReachesTheCallerAndTheTeamGoesOn) {
  ThreadCount count(3);
  for (int64_t bad : {0, 17, 63}) {
    std::atomic<int> ran{0};
    const cpu::TeamScope team(true);
    EXPECT_THROW(cpu::parallel_chunks(64, 1,
                                      [&](int64_t begin, int64_t) {
                                        ran.fetch_add(1);
                                        if (begin == bad) throw std::runtime_error("chunk " + std::to_string(bad));
                                      }),
                 std::runtime_error);
    EXPECT_GE(ran.load(), 1);
    EXPECT_GT(check_chunks(64, 1), 1u);
  }
}

TEST(ThreadTeam, TwoCallersAndNestedRegions) {
  ThreadCount count(3);
  auto nested = [] {
    const cpu::TeamScope team(true);
    for (int round = 0; round < 50; ++round) {
      std::vector<std::atomic<int>> visits(40 * 30);
      cpu::parallel_chunks(40, 3, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i)
          cpu::parallel_chunks(30, 4, [&](int64_t b, int64_t e) {
            for (int64_t j = b; j < e; ++j) visits[i * 30 + j].fetch_add(1);
          });
      });
      for (auto& v : visits) ASSERT_EQ(v.load(), 1);
    }
  };
  std::thread other([&] {
    at::set_num_threads(3);
    nested();
  });
  nested();
  other.join();
}

TEST(ThreadTeam, ChildOfForkStartsATeamOfItsOwn) {
  ThreadCount count(3);
  ASSERT_GT(check_chunks(64, 1), 1u);  // the parent's workers exist
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a region waiting for the parent's workers would hang: end the child instead
    const bool ok = check_chunks(64, 1) > 1 && !::testing::Test::HasFailure();
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

}  // namespace
}  // namespace dms::test
