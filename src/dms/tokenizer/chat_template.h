// Chat templates, rendered natively for the families dms.cpp runs. The family is recognised
// from the checkpoint's Jinja source; an unrecognised template falls back to a plain prompt
// with a warning.
#pragma once
#include <string>
#include <vector>

namespace dms {

class Tokenizer;

struct ChatMessage {
  std::string role;     // "system", "user", "assistant"
  std::string content;
};

class ChatTemplate {
 public:
  enum class Family { ChatML, Llama3, Plain };

  // Recognises the family of `jinja_source` (SmolLM2 and Qwen ChatML with their default system
  // prompts, Llama 3/3.1); prints a warning to stderr and uses Plain when it cannot.
  static ChatTemplate from_source(const std::string& jinja_source, const Tokenizer& tok);

  // Output equals transformers' apply_chat_template(messages, tokenize=False,
  // add_generation_prompt=...) for the recognised families.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  Family family() const { return family_; }
  // Strings that end an assistant turn (e.g. "<|im_end|>", "<|eot_id|>").
  std::vector<std::string> stop_strings() const;

 private:
  Family family_ = Family::Plain;
  std::string default_system_;   // used when the conversation has no system message
  std::string bos_text_;         // e.g. "<|begin_of_text|>" for Llama 3
};

}  // namespace dms
