// GGUF: header, metadata, tensor table, the dequantization of every tensor it declares (up to
// 2^16 elements each), and what is read from its metadata: ModelConfig, Tokenizer (then encode and
// decode a string with it) and the chat template.
#include "dms/model/config.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<GgufFile> gguf;
  try {
    gguf = GgufFile::parse(MappedFile::copy_of("fuzz.gguf", data, size));
  } catch (const Error&) {
    return 0;
  }
  std::vector<float> out;
  for (const auto& t : gguf->tensors()) {
    if (t.numel > (1 << 16)) continue;
    out.resize(static_cast<size_t>(t.numel));
    fuzz::expect_ok_or_error([&] { gguf->dequantize(t, out.data()); });
  }
  fuzz::expect_ok_or_error([&] { ModelConfig::from_gguf(*gguf); });
  fuzz::expect_ok_or_error([&] {
    auto tok = Tokenizer::from_gguf(*gguf);
    fuzz::encode_and_decode(*tok, "Hello, world! 12345 \xc3\xa9t\xc3\xa9 <|im_start|> \n\n");
    const auto chat_template = ChatTemplate::from_source(tok->chat_template_source(), *tok);
    chat_template.render({{"system", "s"}, {"user", "u"}, {"assistant", "a"}}, true);
  });
  return 0;
}
