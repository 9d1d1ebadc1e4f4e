// The chat template renderer: a Jinja source (recognised or not), then after a separator line
// the messages as JSON, rendered with the default model's tokenizer, and the result encoded.
#include <nlohmann/json.hpp>

#include "dms/tokenizer/chat_messages.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& d = fuzz::default_tokenizer();
  const auto parts = fuzz::split_parts(data, size);
  fuzz::expect_ok_or_error([&] {
    const auto chat_template = ChatTemplate::from_source(parts[0], *d.tokenizer);
    std::vector<ChatMessage> messages = {{"user", "hi"}};
    if (parts.size() > 1) {
      const auto j = nlohmann::json::parse(parts[1], nullptr, false);
      if (j.is_discarded()) return;
      messages = parse_chat_messages(j, "messages");
    }
    for (bool prompt : {false, true}) fuzz::encode_and_decode(*d.tokenizer, chat_template.render(messages, prompt));
  });
  return 0;
}
