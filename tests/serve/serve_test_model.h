// What the serve tests share: the default model's real tokenizer and chat template (read from
// its GGUF, no libtorch), and a check of the ApiError a call throws.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dms/serve/protocol.h"
#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"

namespace dms::serve::test {

struct TestModel {
  std::shared_ptr<Tokenizer> tokenizer;
  ChatTemplate chat_template;
};

// Loaded once from $DMS_DEFAULT_MODEL (scripts/env.sh sets it); throws, failing the test that
// asked, when the variable is unset or the file is unreadable.
const TestModel& test_model();

// The test model served under kServedName with `context_length`, its EOS as stop id.
constexpr const char* kServedName = "smollm2-test";
ServedModel served_model(int64_t context_length);

// `f` must throw ApiError with `status` and `param` ("" for none) whose message holds every part.
void expect_api_error(const std::function<void()>& f, int status, const std::string& param,
                      const std::vector<std::string>& parts = {});

}  // namespace dms::serve::test
