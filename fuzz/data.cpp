// Training and evaluation data: a JSONL file (text and chat-message records) read into documents
// with the default model's tokenizer and chat template; the same bytes as a plain-text document.
#include "dms/train/data_documents.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& d = fuzz::default_tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_ok_or_error([&] { documents_from_text(text, "data.jsonl", *d.tokenizer, *d.chat_template); });
  fuzz::expect_ok_or_error([&] { documents_from_text(text, "data.txt", *d.tokenizer, *d.chat_template); });
  return 0;
}
