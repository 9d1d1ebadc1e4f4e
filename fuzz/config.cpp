// config.json (and generation_config.json after a separator line) into ModelConfig and its
// DmsConfig.
#include "dms/model/config.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_parts(data, size);
  fuzz::expect_ok_or_error([&] {
    ModelConfig::from_hf_texts(parts[0], "config.json", parts.size() > 1 ? std::optional(parts[1]) : std::nullopt,
                               "generation_config.json");
  });
  return 0;
}
