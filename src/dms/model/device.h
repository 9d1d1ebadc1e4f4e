// Where tensors live: the CPU, or a CUDA device of the torch build the engine links.
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace dms {

// "cpu", "cuda" (a CUDA device without an index: the caller picks one) or "cuda:N". Throws
// Error naming `where` for any other text. Whether the device exists is require_device's
// question.
at::Device parse_device(const std::string& text, const std::string& where);
// Throws Error naming `where` when `device` is a CUDA device this machine does not have.
void require_device(const at::Device& device, const std::string& where);

}  // namespace dms
