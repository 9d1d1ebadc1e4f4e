// Errors that reach the user: every message names the file, field or request at fault.
#pragma once
#include <stdexcept>
#include <string>

namespace dms {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws Error("<where>: <what>"), e.g. fail("model.gguf", "tensor 'x' extends past end of file").
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw Error(where + ": " + what);
}

}  // namespace dms
