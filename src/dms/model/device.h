// Where tensors live: the CPU, or a CUDA device of the torch build (CUDA is loaded on demand:
// dms/model/cuda_loader.h).
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace dms {

// "cpu", "cuda" (a CUDA device without an index: the caller picks one) or "cuda:N". Throws
// Error naming `where` for any other text. A CUDA device loads CUDA (load_cuda, early enough for
// libtorch); whether the device exists is require_device's question.
at::Device parse_device(const std::string& text, const std::string& where);
// Throws Error naming `where` when `device` is a CUDA device this machine does not have, or
// CUDA cannot be loaded (the loader's reason).
void require_device(const at::Device& device, const std::string& where);

}  // namespace dms
