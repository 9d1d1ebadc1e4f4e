// The server's request parsers: the body of /v1/chat/completions and /v1/completions (then the
// prompt prepared against the default model), /tokenize and /detokenize.
#include "dms/serve/protocol.h"
#include "fuzz_common.h"

using namespace dms;
using serve::ApiError;

namespace {
template <class F>
void expect_ok_or_api_error(F&& f) {
  try {
    f();
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status > 499) std::abort();  // bad requests are the client's fault
    fuzz::show_rejection((std::to_string(e.status) + " " + e.param + ": " + e.message).c_str());
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& d = fuzz::default_tokenizer();
  serve::ServedModel model;
  model.name = "default";
  model.tokenizer = d.tokenizer.get();
  model.chat_template = d.chat_template.get();
  model.context_length = 2048;
  model.eos_ids = {2};
  const std::string body(reinterpret_cast<const char*>(data), size);
  for (auto endpoint : {serve::Endpoint::Chat, serve::Endpoint::Completions})
    expect_ok_or_api_error([&] { serve::prepare_prompt(serve::parse_completion_request(body, endpoint, 16), model); });
  expect_ok_or_api_error([&] { serve::parse_tokenize(body, model); });
  expect_ok_or_api_error([&] { serve::parse_detokenize(body, model); });
  return 0;
}
