// tokenizer.json, then (after separator lines) tokenizer_config.json and a text: the Tokenizer is
// built, the text encoded and decoded (StreamDecoder checked against decode), and the chat
// template the files name recognised and rendered.
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = fuzz::split_parts(data, size);
  HfTokenizerFiles files;
  files.tokenizer_json = parts[0];
  files.tokenizer_path = "tokenizer.json";
  if (parts.size() > 1) files.config_json = parts[1];
  files.config_path = "tokenizer_config.json";
  fuzz::expect_ok_or_error([&] {
    const auto tok = Tokenizer::from_hf_files(files);
    fuzz::encode_and_decode(*tok, parts.size() > 2 ? parts[2] : "Hello, world! 12345 <|im_end|>");
    const auto chat_template = ChatTemplate::from_source(tok->chat_template_source(), *tok);
    chat_template.render({{"user", "u"}, {"assistant", "a"}}, true);
  });
  return 0;
}
