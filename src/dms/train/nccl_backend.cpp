#include "dms/train/nccl_backend.h"

#include "dms/util/error.h"

#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dms {

#ifdef USE_C10D_NCCL

bool nccl_built() { return true; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    const at::Device& device, std::chrono::milliseconds timeout,
                                                    const std::string& where) {
  c10::cuda::set_device(device.index());
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
  nccl->setBoundDeviceId(device);
  return nccl;
}

#else

bool nccl_built() { return false; }

c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>&, int, int, const at::Device&,
                                                    std::chrono::milliseconds, const std::string& where) {
  fail(where, "this build has no NCCL (CMake found no CUDA or NCCL headers next to the torch wheel)");
}

#endif

}  // namespace dms
