// The OpenAI wire format of `dms serve`: requests parsed and validated into plain structs (so
// every rule is testable without a socket) and the JSON of responses, stream chunks and errors.
// Nothing here knows about the engine or the cache.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dms/tokenizer/chat_template.h"
#include "dms/tokenizer/tokenizer.h"

namespace dms::serve {

// An error the client caused (or a refusal), answered as OpenAI's
// {"error": {"message", "type", "param", "code"}} with `status`.
struct ApiError : std::exception {
  int status;
  std::string message;
  std::string param;  // the request field at fault, empty when none is
  std::string type;   // "invalid_request_error", "authentication_error", ...
  ApiError(int status, std::string message, std::string param = "", std::string type = "");
  const char* what() const noexcept override { return message.c_str(); }
};
nlohmann::json error_body(const ApiError& e);

enum class Endpoint { Chat, Completions };

struct Sampling {
  double temperature = 1.0;  // OpenAI's default; 0 is greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;
  double min_p = 0.0;
  std::optional<uint64_t> seed;  // absent: a fresh seed per request
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;                  // empty when the client sent none
  std::vector<ChatMessage> messages;  // Chat
  std::string prompt;                 // Completions, as text...
  std::vector<int32_t> prompt_ids;    // ...or as token ids
  std::optional<int64_t> max_tokens;  // absent: up to the context length
  Sampling sampling;
  std::vector<std::string> stop;
  int64_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;
};

// What the protocol needs from the model: its tokenizer, chat template and limits.
struct ServedModel {
  std::string name;  // --served-model-name
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;
  int64_t context_length = 0;
  std::vector<int32_t> eos_ids;
};

// Parses a /v1/chat/completions or /v1/completions body. Throws ApiError (400) naming the field:
// malformed JSON, wrong types, a missing messages/prompt, out-of-range values, and fields whose
// value we cannot honour (logprobs, tools, penalties, ...). Unknown fields are ignored.
CompletionRequest parse_completion_request(const std::string& body, Endpoint endpoint, int64_t max_n);

// The prompt's token ids (chat: through the template) and the generation length, checked against
// the context: throws ApiError (400) for a prompt or max_tokens that does not fit, or token ids
// outside the vocabulary.
struct PreparedPrompt {
  std::vector<int32_t> ids;
  int64_t max_tokens = 0;
  std::vector<std::string> stop_strings;  // the request's, plus the chat template's turn ends
  std::vector<int32_t> stop_ids;          // the model's EOS ids unless ignore_eos
  // Chat: the token counts at which the first message and all but the last one end (where they
  // are a prefix of the prompt's tokens): a shared system message or a conversation's history,
  // kept there by the engine's prefix cache (GenerationParams::cache_points).
  std::vector<int64_t> cache_points;
};
PreparedPrompt prepare_prompt(const CompletionRequest& request, const ServedModel& model);

// POST /tokenize: {"prompt": text, "add_special_tokens": bool (default true)} or {"messages": [...]}
// (through the chat template). Throws ApiError (400) naming the field.
std::vector<int32_t> parse_tokenize(const std::string& body, const ServedModel& model);
// POST /detokenize: {"tokens": [ids]}. Throws ApiError (400) for ids outside the vocabulary.
std::string parse_detokenize(const std::string& body, const ServedModel& model);

// "stop" / "length" / "abort": OpenAI's finish_reason for the engine's stop reason.
std::string finish_reason(const std::string& engine_stop_reason);

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;  // of prompt_tokens, those the prefix cache held
};
nlohmann::json usage_json(const Usage& u);

struct Choice {
  std::string text;
  std::string finish_reason;
};

// The non-streamed answer.
nlohmann::json completion_response(Endpoint endpoint, const std::string& id, int64_t created,
                                   const std::string& model, const std::vector<Choice>& choices, const Usage& usage);
// One streamed chunk for choice `index`: text (chat: delta.content; `role` adds delta.role) and,
// on its last chunk, the finish reason. With include_usage every chunk carries "usage": null.
nlohmann::json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                            int64_t index, const std::string& text, const std::string& finish_reason,
                            bool role, bool include_usage);
// The last chunk with stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                           const Usage& usage);

}  // namespace dms::serve
