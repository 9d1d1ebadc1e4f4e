// Data-parallel retrofitting across processes (issue 4, part 6): every process trains the same
// model on its share of each step's sequences, and the trained tensors' gradients are averaged
// before the optimizer step, so every process takes the same step one process with the whole
// batch would take. Processes meet through libtorch's distributed package: a c10d TCPStore on
// MASTER_ADDR:MASTER_PORT (rank 0 serves it) and a Gloo process group over TCP, launched the way
// torchrun launches (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; LOCAL_RANK optional).
//
//   auto dp = DataParallel::from_env();            // nullptr: a single process
//   if (dp) options.reduce_gradients = [&](const auto& t) { dp->average(t); };
//   Trainer trainer(model, options);
//   if (dp) dp->broadcast(trainer.trained());       // every process starts from rank 0's weights
//   // each micro-batch: this rank's B sequences, first_sequence = (micro * world + rank) * B
//
// Gloo's collectives give every rank the same bits (ring all-reduce: each chunk is summed once,
// then copied around), so weights never drift apart between processes. Training on GPUs, each
// process calls use_nccl(its device) after joining: gradients and weights on that device then go
// through an NCCL group on the same store, without a trip through host memory (NCCL's ring and
// tree all-reduce also reduce each chunk once and copy it to every rank). Without NCCL, CUDA
// tensors are staged through host memory and Gloo. The few numbers of mean() and any() always go
// through Gloo.
#pragma once
#include <ATen/ATen.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace dms {

class DataParallel {
 public:
  // How long the rendezvous and every collective may wait for the other processes.
  static constexpr std::chrono::seconds kDefaultTimeout{300};

  // Joins the group of `world` processes as `rank`; rank 0 serves the store on address:port.
  // Blocks until every process has joined. Throws Error for bad arguments and for a
  // rendezvous that does not complete within `timeout`.
  DataParallel(int rank, int world, const std::string& address, int port,
               std::chrono::milliseconds timeout = kDefaultTimeout);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // From RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (LOCAL_RANK optional), as torchrun sets
  // them. Returns nullptr when WORLD_SIZE is unset or 1; throws Error naming the variable for
  // a bad value (not a number, RANK >= WORLD_SIZE, missing MASTER_ADDR/PORT) and for a
  // rendezvous that times out.
  static std::unique_ptr<DataParallel> from_env();

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }  // LOCAL_RANK, or rank() when unset

  // From now on, average() and broadcast() of tensors on `device`, this process's CUDA device,
  // go through NCCL. Returns false, changing nothing, in a build without NCCL. Throws Error for
  // a device that is not CUDA or not present.
  bool use_nccl(const at::Device& device);

  // Averages each tensor's .grad() across processes in place (an undefined gradient counts as
  // zeros and is defined afterwards). Every process must pass tensors of the same shapes and
  // dtypes in the same order; a mismatch throws Error on every process.
  void average(const std::vector<at::Tensor>& trained);
  // Overwrites the tensors' data with root's, in place (autograd is not involved).
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0);
  // Returns once every process has called it.
  void barrier();
  // The element-wise mean over processes of a few numbers (a step's losses, for the log).
  std::vector<double> mean(const std::vector<double>& values);
  // True on every process when `flag` is true on any: a Ctrl-C or SIGTERM that reached some
  // processes stops all of them after the same step, rather than leaving the rest waiting in
  // the next collective.
  bool any(bool flag);

 private:
  struct Group;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  std::string where_;  // "data parallel rank R of W (address:port)", for errors
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Group> group_;
};

}  // namespace dms
