// CUDA on demand. The dms library, the `dms` command and the tests link libtorch's CPU half only
// (libtorch_cpu, c10), so a run on the CPU maps none of libtorch_cuda, cuBLAS, cuDNN or NCCL.
// libdms_cuda.so, built next to them from src/dms/cuda/, links libtorch_cuda and holds the code
// that needs the CUDA headers; loading it runs libtorch_cuda's static initializers, which
// register libtorch's CUDA backend (hooks, kernels, allocator, device guard), after which
// at::hasCUDA(), tensors on CUDA devices and so on work as if libtorch_cuda were linked.
//
// Load it before libtorch is first asked about CUDA and before the first backward pass: libtorch
// settles its CUDA hooks on the first question (without the module: no CUDA, for good), and
// autograd starts its per-device threads once, on the first backward. parse_device loads it when
// a CUDA device is named, which is before either.
#pragma once
#include <string>

namespace dms {

// Loads libdms_cuda.so from the folder of the running program (else by name, through the
// library path) the first time; later calls give the first answer. Empty when it is loaded,
// else why not: this build has no module (the torch wheel it was built with has no
// libtorch_cuda), or the module or a library it needs could not be loaded (the loader's reason).
const std::string& load_cuda();

// Whether libtorch can use a CUDA device here: loads CUDA first.
bool cuda_available();

// The symbol `name` of the loaded module, or nullptr (not loaded, or built without it).
void* cuda_symbol(const char* name);

}  // namespace dms
