// Ctrl-C (SIGINT) and SIGTERM as a request to stop a training run after the step in progress,
// so it can save a checkpoint instead of dying mid-step. While a StopSignal lives, the two
// signals only set a flag; its destructor puts the previous handlers back. One at a time.
#pragma once
#include <csignal>

namespace dms {

class StopSignal {
 public:
  StopSignal();
  ~StopSignal();
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  // Whether SIGINT or SIGTERM arrived since construction.
  bool received() const;

 private:
  struct sigaction previous_int_ {}, previous_term_ {};
};

}  // namespace dms
