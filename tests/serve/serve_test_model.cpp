#include "serve_test_model.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <stdexcept>

#include "dms/format/gguf.h"

namespace dms::serve::test {

const TestModel& test_model() {
  static const TestModel model = [] {
    const char* path = std::getenv("DMS_DEFAULT_MODEL");
    if (path == nullptr)
      throw std::runtime_error("DMS_DEFAULT_MODEL is not set: source scripts/env.sh (scripts/fetch-default-model "
                               "downloads the file)");
    auto gguf = GgufFile::open(path);
    auto tok = Tokenizer::from_gguf(*gguf);
    ChatTemplate tmpl = ChatTemplate::from_source(tok->chat_template_source(), *tok);
    return TestModel{tok, tmpl};
  }();
  return model;
}

ServedModel served_model(int64_t context_length) {
  const TestModel& m = test_model();
  ServedModel s;
  s.name = kServedName;
  s.tokenizer = m.tokenizer.get();
  s.chat_template = &m.chat_template;
  s.context_length = context_length;
  s.eos_ids = {*m.tokenizer->eos_id()};
  return s;
}

void expect_api_error(const std::function<void()>& f, int status, const std::string& param,
                      const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no ApiError thrown (expected " << status << ", param '" << param << "')";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status, status) << e.message;
    EXPECT_EQ(e.param, param) << e.message;
    for (const auto& part : parts)
      EXPECT_NE(e.message.find(part), std::string::npos) << "'" << part << "' not in: " << e.message;
  }
}

}  // namespace dms::serve::test
