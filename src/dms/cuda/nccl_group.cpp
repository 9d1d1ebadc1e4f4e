// Part of libdms_cuda.so, the library loaded when a CUDA device is asked for
// (dms/model/cuda_loader.h): libtorch's NCCL process group. Built with USE_C10D_NCCL and the
// CUDA and NCCL headers of the torch wheel's nvidia packages when CMake found them; without,
// the module exports nothing and data parallel on GPUs goes through host memory and Gloo.
#include "dms/train/nccl_backend.h"

#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" void dms_make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                    const at::Device& device, std::chrono::milliseconds timeout,
                                    c10::intrusive_ptr<c10d::Backend>* out) {
  c10::cuda::set_device(device.index());
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
  nccl->setBoundDeviceId(device);
  *out = nccl;
}
#endif
