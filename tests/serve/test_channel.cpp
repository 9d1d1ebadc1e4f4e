// ResponseChannel between two threads: nothing lost or reordered, take() waits no longer than
// it must, and a cancel from one side is seen by the other.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "dms/serve/generator.h"

namespace dms::serve {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(ResponseChannel, TakeTimesOutWhenEmpty) {
  ResponseChannel channel;
  const auto start = Clock::now();
  EXPECT_TRUE(channel.take(50ms).empty());
  EXPECT_GE(Clock::now() - start, 50ms);
}

TEST(ResponseChannel, TakeWakesOnPush) {
  ResponseChannel channel;
  std::thread producer([&] {
    std::this_thread::sleep_for(30ms);
    channel.push({2, "late", Finish{"stop", "", 4}});
  });
  const auto start = Clock::now();
  const std::vector<StreamEvent> events = channel.take(10s);
  const auto waited = Clock::now() - start;
  producer.join();
  EXPECT_LT(waited, 5s) << "take() did not wake when the event came";
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].index, 2);
  EXPECT_EQ(events[0].text, "late");
  ASSERT_TRUE(events[0].finish.has_value());
  EXPECT_EQ(events[0].finish->reason, "stop");
  EXPECT_EQ(events[0].finish->completion_tokens, 4);
}

TEST(ResponseChannel, ManyEventsAcrossThreadsInOrder) {
  ResponseChannel channel;
  constexpr int kEvents = 5000;
  constexpr int kChoices = 3;
  std::thread producer([&] {
    for (int i = 0; i < kEvents; ++i) {
      channel.push({i % kChoices, std::to_string(i), std::nullopt});
      if (i % 500 == 0) std::this_thread::sleep_for(1ms);  // let the taker find it empty now and then
    }
    channel.push({0, "", Finish{"length", "", kEvents}});
  });
  std::vector<StreamEvent> got;
  const auto deadline = Clock::now() + 20s;
  while ((got.empty() || !got.back().finish) && Clock::now() < deadline)
    for (StreamEvent& e : channel.take(100ms)) got.push_back(std::move(e));
  producer.join();
  ASSERT_EQ(got.size(), static_cast<size_t>(kEvents + 1));
  for (int i = 0; i < kEvents; ++i) {
    EXPECT_EQ(got[i].index, i % kChoices);
    EXPECT_EQ(got[i].text, std::to_string(i));
    EXPECT_FALSE(got[i].finish.has_value());
  }
  EXPECT_EQ(got.back().finish->completion_tokens, kEvents);
}

TEST(ResponseChannel, CancelIsSeenByTheOtherThread) {
  ResponseChannel channel;
  EXPECT_FALSE(channel.cancelled());
  int pushed = 0;
  // The "engine" pushes until the "HTTP side" cancels, then finishes with abort, as EngineWorker does.
  std::thread engine([&] {
    const auto deadline = Clock::now() + 10s;
    while (!channel.cancelled() && Clock::now() < deadline) {
      channel.push({0, "x", std::nullopt});
      ++pushed;
      std::this_thread::sleep_for(1ms);
    }
    channel.push({0, "", Finish{channel.cancelled() ? "abort" : "length", "", pushed}});
  });
  int seen = 0;
  while (seen < 3) seen += static_cast<int>(channel.take(1s).size());
  channel.cancel();
  EXPECT_TRUE(channel.cancelled());
  std::optional<Finish> finish;
  const auto deadline = Clock::now() + 10s;
  while (!finish && Clock::now() < deadline)
    for (StreamEvent& e : channel.take(100ms))
      if (e.finish) finish = e.finish;
  engine.join();
  ASSERT_TRUE(finish.has_value()) << "the engine side never saw the cancel";
  EXPECT_EQ(finish->reason, "abort");
  EXPECT_EQ(finish->completion_tokens, pushed);
}

}  // namespace
}  // namespace dms::serve
