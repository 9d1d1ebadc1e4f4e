// libtorch's NCCL process group, for data parallel training on GPUs. Its header needs the CUDA
// and NCCL headers, so it is built in a translation unit of its own (with USE_C10D_NCCL when
// CMake found them; without, make_nccl_backend throws).
#pragma once
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>

namespace dms {

// Whether this build can make an NCCL process group.
bool nccl_built();

// An NCCL group of `world` processes meeting through `store`, this process being `rank` on the
// CUDA device `device`, which has an index (it becomes the current device). Communicators are created on the
// first collective. Throws Error naming `where` when NCCL is not built in (see nccl_built).
c10::intrusive_ptr<c10d::Backend> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int world,
                                                    const at::Device& device, std::chrono::milliseconds timeout,
                                                    const std::string& where);

}  // namespace dms
