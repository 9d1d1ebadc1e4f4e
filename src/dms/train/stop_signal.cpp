#include "dms/train/stop_signal.h"

#include <atomic>

#include "dms/util/error.h"

namespace dms {

namespace {

std::atomic<int> g_signal{0};
std::atomic<bool> g_installed{false};
extern "C" void on_stop_signal(int sig) { g_signal.store(sig); }

}  // namespace

StopSignal::StopSignal() {
  if (g_installed.exchange(true)) fail("StopSignal", "another one is already installed");
  g_signal.store(0);
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &previous_int_);
  sigaction(SIGTERM, &sa, &previous_term_);
}

StopSignal::~StopSignal() {
  sigaction(SIGINT, &previous_int_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
  g_installed.store(false);
}

bool StopSignal::received() const { return g_signal.load() != 0; }

}  // namespace dms
