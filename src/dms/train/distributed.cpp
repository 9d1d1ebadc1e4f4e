#include "dms/train/distributed.h"

// The torch wheel is built with Gloo but does not define the macro for its users, and ships
// ProcessGroupGloo.hpp without the Gloo headers it includes (Debian's libgloo-dev provides
// them). Only ProcessGroupGloo's constructor, Options and device factories are called here,
// all exported by libtorch_cpu; the Gloo types appear in ProcessGroupGloo's layout only behind
// shared_ptr, so the older Debian headers do not change what is compiled against the wheel.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <charconv>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <optional>

#include "dms/model/device.h"
#include "dms/train/nccl_backend.h"
#include "dms/util/error.h"

namespace dms {

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
  c10::intrusive_ptr<c10d::Backend> nccl;  // after use_nccl
  at::Device nccl_device{at::kCPU};

  // Where a collective's buffer for tensors on `device` lives: on NCCL's device, or in host
  // memory for Gloo; and the group for a buffer there.
  at::Device buffer_device(const at::Device& device) const { return nccl && device == nccl_device ? device : at::kCPU; }
  c10d::Backend& for_buffer(const at::Device& on) const { return on.is_cpu() ? static_cast<c10d::Backend&>(*gloo) : *nccl; }
};

namespace {

// c10 messages carry a backtrace after the first lines; the user needs only the reason.
std::string reason(const std::exception& e) {
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) return c10->what_without_backtrace();
  return e.what();
}

bool is_loopback(const std::string& address) {
  return address == "localhost" || address == "::1" || address.rfind("127.", 0) == 0;
}

// The address this process's Gloo connections listen on: loopback when the group is local,
// GLOO_SOCKET_IFNAME's interface when set (as in PyTorch), else this host's name.
std::shared_ptr<gloo::transport::Device> gloo_device(const std::string& master_address) {
  if (is_loopback(master_address)) return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

// Tensors sharing a dtype go through one collective as one flat buffer, in first-seen order.
std::map<at::ScalarType, std::vector<size_t>> by_dtype(const std::vector<at::Tensor>& tensors) {
  std::map<at::ScalarType, std::vector<size_t>> groups;
  for (size_t i = 0; i < tensors.size(); ++i) groups[tensors[i].scalar_type()].push_back(i);
  return groups;
}

// Tensors on several devices go through host memory.
at::Device common_device(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& indices) {
  const at::Device first = tensors[indices.front()].device();
  for (size_t i : indices)
    if (tensors[i].device() != first) return at::kCPU;
  return first;
}

at::Tensor flatten(const std::vector<at::Tensor>& tensors, const std::vector<size_t>& indices, const at::Device& on) {
  std::vector<at::Tensor> flat;
  for (size_t i : indices) flat.push_back(tensors[i].detach().to(on).reshape({-1}));
  return at::cat(flat).contiguous();
}

void unflatten(const at::Tensor& flat, const std::vector<at::Tensor>& tensors, const std::vector<size_t>& indices) {
  int64_t offset = 0;
  for (size_t i : indices) {
    const int64_t n = tensors[i].numel();
    tensors[i].copy_(flat.narrow(0, offset, n).view(tensors[i].sizes()));
    offset += n;
  }
}

// A fingerprint of the tensors' count, shapes and dtypes, below 2^62 so it can be negated.
int64_t fingerprint(const std::vector<at::Tensor>& tensors) {
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(tensors.size());
  for (const auto& t : tensors) {
    mix(static_cast<uint64_t>(t.scalar_type()));
    mix(static_cast<uint64_t>(t.dim()));
    for (int64_t d : t.sizes()) mix(static_cast<uint64_t>(d));
  }
  return static_cast<int64_t>(h >> 2);
}

std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (!value) return std::nullopt;
  return std::string(value);
}

int64_t parse_env_integer(const char* name, const std::string& value, int64_t lo, int64_t hi) {
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size())
    fail(std::string("environment variable ") + name, "'" + value + "' is not an integer");
  if (n < lo || n > hi)
    fail(std::string("environment variable ") + name,
         value + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return n;
}

std::string required_env(const char* name, const std::string& why) {
  const auto value = env(name);
  if (!value || value->empty()) fail(std::string("environment variable ") + name, "not set (" + why + ")");
  return *value;
}

}  // namespace

DataParallel::DataParallel(int rank, int world, const std::string& address, int port,
                           std::chrono::milliseconds timeout)
    : rank_(rank), world_(world), local_rank_(rank), timeout_(timeout) {
  where_ = "data parallel rank " + std::to_string(rank) + " of " + std::to_string(world) + " (" + address + ":" +
           std::to_string(port) + ")";
  if (world < 1) fail(where_, "the world size must be at least 1");
  if (rank < 0 || rank >= world) fail(where_, "the rank must be in [0, world size)");
  if (address.empty()) fail(where_, "no master address");
  if (port < 1 || port > 65535) fail(where_, "the master port must be in [1, 65535]");
  if (timeout.count() <= 0) fail(where_, "the timeout must be positive");

  group_ = std::make_unique<Group>();
  try {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0;
    o.numWorkers = static_cast<size_t>(world);
    o.waitWorkers = true;
    o.timeout = timeout;
    group_->store = c10::make_intrusive<c10d::TCPStore>(address, o);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(gloo_device(address));
    group_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", group_->store), rank, world, options);
  } catch (const std::exception& e) {
    fail(where_, "could not join the process group within " + std::to_string(timeout.count()) +
                     " ms (are all " + std::to_string(world) + " processes started with the same MASTER_ADDR and "
                     "MASTER_PORT?): " + reason(e));
  }
}

DataParallel::~DataParallel() = default;

std::unique_ptr<DataParallel> DataParallel::from_env() {
  const auto world_text = env("WORLD_SIZE");
  if (!world_text || world_text->empty()) return nullptr;
  const int64_t world = parse_env_integer("WORLD_SIZE", *world_text, 1, std::numeric_limits<int>::max());
  if (world == 1) return nullptr;
  const int64_t rank = parse_env_integer("RANK", required_env("RANK", "WORLD_SIZE is " + *world_text), 0, world - 1);
  const std::string address = required_env("MASTER_ADDR", "WORLD_SIZE is " + *world_text);
  const int64_t port = parse_env_integer("MASTER_PORT", required_env("MASTER_PORT", "WORLD_SIZE is " + *world_text), 1, 65535);
  const auto local_text = env("LOCAL_RANK");
  const int64_t local_rank = local_text && !local_text->empty()
                                 ? parse_env_integer("LOCAL_RANK", *local_text, 0, world - 1)
                                 : rank;
  auto dp = std::make_unique<DataParallel>(static_cast<int>(rank), static_cast<int>(world), address,
                                           static_cast<int>(port));
  dp->local_rank_ = static_cast<int>(local_rank);
  return dp;
}

namespace {

// Runs a collective and waits for it, turning c10d's exceptions into Error.
void run(const std::string& where, const std::string& what, const std::function<c10::intrusive_ptr<c10d::Work>()>& op) {
  try {
    op()->wait();
  } catch (const std::exception& e) {
    fail(where, what + " failed: " + reason(e));
  }
}

// Every rank must pass the same buffers, or Gloo would pair unrelated bytes (or wait until the
// timeout): the maximum of (f, -f) over ranks is (f, -f) only when every fingerprint f agrees.
void require_same_tensors(c10d::ProcessGroupGloo& gloo, const std::string& where, const std::string& op,
                          const std::vector<at::Tensor>& tensors) {
  const int64_t mine = fingerprint(tensors);
  std::vector<at::Tensor> check{at::tensor({mine, -mine}, at::kLong)};
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  run(where, op + ": comparing tensor shapes", [&] { return gloo.allreduce(check, max); });
  if (check[0][0].item<int64_t>() != mine || check[0][1].item<int64_t>() != -mine)
    fail(where, op + ": the processes passed different tensors (count, shapes or dtypes differ)");
}

}  // namespace

bool DataParallel::use_nccl(const at::Device& device) {
  if (!device.is_cuda() || !device.has_index())
    fail(where_, "NCCL needs a CUDA device with an index, not " + device.str());
  require_device(device, where_);
  if (!nccl_built()) return false;
  if (world_ == 1) return true;
  try {
    group_->nccl = make_nccl_backend(c10::make_intrusive<c10d::PrefixStore>("nccl", group_->store), rank_, world_,
                                     device, timeout_, where_);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(where_, "could not create the NCCL group on " + device.str() + ": " + reason(e));
  }
  group_->nccl_device = device;
  return true;
}

void DataParallel::average(const std::vector<at::Tensor>& trained) {
  if (world_ == 1) return;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> grads;
  for (size_t i = 0; i < trained.size(); ++i) {
    if (!trained[i].defined()) fail(where_, "average: tensor " + std::to_string(i) + " is undefined");
    if (!at::isFloatingType(trained[i].scalar_type()))
      fail(where_, "average: tensor " + std::to_string(i) + " is not floating point");
    at::Tensor g = trained[i].grad();
    grads.push_back(g.defined() ? g : at::zeros_like(trained[i]));
  }
  require_same_tensors(*group_->gloo, where_, "average", grads);

  for (const auto& [dtype, indices] : by_dtype(grads)) {
    const at::Device on = group_->buffer_device(common_device(grads, indices));
    std::vector<at::Tensor> flat{flatten(grads, indices, on)};
    run(where_, "average: all-reduce of " + std::to_string(flat[0].numel()) + " values",
        [&] { return group_->for_buffer(on).allreduce(flat); });
    flat[0].div_(world_);
    unflatten(flat[0], grads, indices);
  }
  for (size_t i = 0; i < trained.size(); ++i)
    if (!trained[i].grad().defined()) trained[i].mutable_grad() = grads[i];
}

void DataParallel::broadcast(const std::vector<at::Tensor>& tensors, int root) {
  if (root < 0 || root >= world_)
    fail(where_, "broadcast: root " + std::to_string(root) + " is not a rank in [0, " + std::to_string(world_) + ")");
  for (size_t i = 0; i < tensors.size(); ++i)
    if (!tensors[i].defined()) fail(where_, "broadcast: tensor " + std::to_string(i) + " is undefined");
  if (world_ == 1) return;
  at::NoGradGuard no_grad;
  require_same_tensors(*group_->gloo, where_, "broadcast", tensors);

  c10d::BroadcastOptions from_root;
  from_root.rootRank = root;
  for (const auto& [dtype, indices] : by_dtype(tensors)) {
    const at::Device on = group_->buffer_device(common_device(tensors, indices));
    std::vector<at::Tensor> flat{flatten(tensors, indices, on)};
    run(where_, "broadcast of " + std::to_string(flat[0].numel()) + " values from rank " + std::to_string(root),
        [&] { return group_->for_buffer(on).broadcast(flat, from_root); });
    unflatten(flat[0], tensors, indices);
  }
}

void DataParallel::barrier() {
  if (world_ == 1) return;
  run(where_, "barrier", [&] { return group_->gloo->barrier(); });
}

std::vector<double> DataParallel::mean(const std::vector<double>& values) {
  if (world_ == 1 || values.empty()) return values;
  std::vector<at::Tensor> sum{at::tensor(values, at::kDouble)};
  require_same_tensors(*group_->gloo, where_, "mean", sum);
  run(where_, "mean of " + std::to_string(values.size()) + " values", [&] { return group_->gloo->allreduce(sum); });
  const at::Tensor m = sum[0].div(world_);
  return std::vector<double>(m.data_ptr<double>(), m.data_ptr<double>() + m.numel());
}

bool DataParallel::any(bool flag) {
  if (world_ == 1) return flag;
  std::vector<at::Tensor> t{at::tensor({flag ? 1.0 : 0.0}, at::kDouble)};
  c10d::AllreduceOptions max;
  max.reduceOp = c10d::ReduceOp::MAX;
  run(where_, "any", [&] { return group_->gloo->allreduce(t, max); });
  return t[0].item<double>() > 0;
}

}  // namespace dms
