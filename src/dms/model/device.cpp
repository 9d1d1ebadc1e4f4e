#include "dms/model/device.h"

#include <charconv>

#include "dms/model/cuda_loader.h"
#include "dms/util/error.h"

namespace dms {

at::Device parse_device(const std::string& text, const std::string& where) {
  if (text == "cpu") return at::Device(at::kCPU);
  at::Device device(at::kCUDA);
  if (text != "cuda") {
    const std::string n = text.starts_with("cuda:") ? text.substr(5) : "";
    int index = -1;
    const auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), index);
    if (n.empty() || ec != std::errc() || end != n.data() + n.size() || index < 0 || index > 127)
      fail(where, "'" + text + "' is not a device (expected cpu, cuda or cuda:N)");
    device = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index));
  }
  load_cuda();  // now, before anything asks libtorch about CUDA; a failure is require_device's to report
  return device;
}

void require_device(const at::Device& device, const std::string& where) {
  if (!device.is_cuda()) return;
  if (const std::string& why = load_cuda(); !why.empty()) fail(where, "no CUDA device is available (" + why + ")");
  if (!at::hasCUDA())
    fail(where, "no CUDA device is available (no GPU or driver on this machine, or a torch build without CUDA)");
  const size_t count = at::getNumGPUs();
  if (device.has_index() && device.index() >= static_cast<int>(count))
    fail(where, "there is no CUDA device " + std::to_string(device.index()) + "; this machine has " +
                    std::to_string(count));
}

}  // namespace dms
