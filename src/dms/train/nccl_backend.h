// libtorch's NCCL process group, for data parallel training on GPUs. It lives in libtorch_cuda
// and its header needs the CUDA and NCCL headers, so it is made in libdms_cuda.so
// (src/dms/cuda/nccl_group.cpp, built with USE_C10D_NCCL when CMake found those headers), which
// this side loads on demand (dms/model/cuda_loader.h) and calls through dms_make_nccl_group.
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <string>

// Exported by libdms_cuda.so when built with NCCL, found with dlsym; make_nccl_backend's work
// (without `where`), the group in *out. Throws what libtorch throws.
extern "C" void dms_make_nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                    const at::Device& device, std::chrono::milliseconds timeout,
                                    c10::intrusive_ptr<c10d::Backend>* out);

namespace dms {

// Whether this build can make an NCCL process group here (loads CUDA to find out).
bool nccl_built();

// An NCCL group of `world` processes meeting through `store`, this process being `rank` on the
// CUDA device `device`, which has an index (it becomes the current device). Communicators are created on the
// first collective. Throws Error naming `where` when NCCL is not built in or CUDA cannot be
// loaded (see nccl_built).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    const at::Device& device, std::chrono::milliseconds timeout,
                                                    const std::string& where);

}  // namespace dms
