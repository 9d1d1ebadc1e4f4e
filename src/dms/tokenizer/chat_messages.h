// A conversation read from JSON: [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
// the "messages" of training data (dms retrofit) and evaluation data (dms eval).
#pragma once
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "dms/tokenizer/chat_template.h"

namespace dms {

// Throws Error naming `where` and the message (messages[i].role ...) for anything but a
// non-empty list of {role, content} objects with string content and a known role.
std::vector<ChatMessage> parse_chat_messages(const nlohmann::json& messages, const std::string& where);

}  // namespace dms
