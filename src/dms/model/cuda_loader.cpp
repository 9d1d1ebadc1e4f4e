#include "dms/model/cuda_loader.h"

#include <ATen/Context.h>
#include <dlfcn.h>

#include <filesystem>
#include <system_error>

namespace dms {
namespace {

struct Module {
  void* handle = nullptr;
  std::string error;
};

#ifdef DMS_CUDA_MODULE

// The module beside the running program (the build folder holds the executables and the
// module together), else whatever the library path finds under its name.
Module open_module() {
  std::error_code ec;
  const auto folder = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  const std::string beside = (folder / DMS_CUDA_MODULE).string();
  if (!ec && std::filesystem::exists(beside)) {
    if (void* h = dlopen(beside.c_str(), RTLD_NOW | RTLD_GLOBAL)) return {h, ""};
    return {nullptr, "could not load " + beside + ": " + dlerror()};
  }
  if (void* h = dlopen(DMS_CUDA_MODULE, RTLD_NOW | RTLD_GLOBAL)) return {h, ""};
  return {nullptr, std::string("could not load " DMS_CUDA_MODULE " (not beside the program, in ") + folder.string() +
                       ", nor on the library path): " + dlerror()};
}

#else

Module open_module() {
  return {nullptr, "this dms was built with a torch without CUDA"};
}

#endif

const Module& module() {
  static const Module m = open_module();
  return m;
}

}  // namespace

const std::string& load_cuda() { return module().error; }

bool cuda_available() { return load_cuda().empty() && at::hasCUDA(); }

void* cuda_symbol(const char* name) { return module().handle ? dlsym(module().handle, name) : nullptr; }

}  // namespace dms
