#include "dms/train/nccl_backend.h"

#include "dms/model/cuda_loader.h"
#include "dms/util/error.h"

namespace dms {
namespace {

auto make_nccl_group() { return reinterpret_cast<decltype(&dms_make_nccl_group)>(cuda_symbol("dms_make_nccl_group")); }

}  // namespace

bool nccl_built() { return make_nccl_group() != nullptr; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    const at::Device& device, std::chrono::milliseconds timeout,
                                                    const std::string& where) {
  const auto make = make_nccl_group();
  if (!make && !load_cuda().empty()) fail(where, "no NCCL: CUDA could not be loaded (" + load_cuda() + ")");
  if (!make) fail(where, "this build has no NCCL (CMake found no CUDA or NCCL headers next to the torch wheel)");
  c10::intrusive_ptr<c10d::Backend> group;
  make(store, rank, world, device, timeout, &group);
  return group;
}

}  // namespace dms
