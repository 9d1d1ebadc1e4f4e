#include "dms/tokenizer/chat_messages.h"

#include <nlohmann/json.hpp>

#include "dms/util/error.h"

namespace dms {

std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& messages, const std::string& where) {
  if (!messages.is_array() || messages.empty()) fail(where, "'messages' must be a non-empty list of {role, content} objects");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const nlohmann::json& m = messages[i];
    const std::string field = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(where, field + " must be an object with 'role' and 'content'");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) fail(where, field + ".role must be a string");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant")
      fail(where, field + ".role '" + r + "' is not one of system, user, assistant");
    auto content = m.find("content");
    if (content == m.end() || !content->is_string()) fail(where, field + ".content must be a string");
    out.push_back({r, content->get<std::string>()});
  }
  return out;
}

}  // namespace dms
