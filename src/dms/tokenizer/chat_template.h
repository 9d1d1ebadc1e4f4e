// Chat templates, rendered natively for the families dms.cpp runs. The family is recognised
// from the checkpoint's Jinja source; an unrecognised template falls back to a plain prompt
// ("role: content" lines, then "assistant: ") with a warning.
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

  // Recognises the family of `jinja_source` (SmolLM2 and Qwen2.5 ChatML with their default system
  // prompts, Qwen3 ChatML with its <think> blocks, Llama 3 and Llama 3.1 with its dated system
  // header); prints a warning to stderr and uses Plain when it cannot.
  static ChatTemplate from_source(const std::string& jinja_source, const Tokenizer& tok);

  // Output equals transformers' apply_chat_template(messages, tokenize=False,
  // add_generation_prompt=...) for the recognised families.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  Family family() const { return family_; }
  // Strings that end an assistant turn (e.g. "<|im_end|>", "<|eot_id|>"; Plain: the EOS token).
  std::vector<std::string> stop_strings() const;

 private:
  std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  std::string render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;

  Family family_ = Family::Plain;
  std::string default_system_;   // used when the conversation has no system message
  std::string bos_text_;         // e.g. "<|begin_of_text|>" for Llama 3
  std::string eos_text_;
  bool think_blocks_ = false;    // Qwen3: the latest assistant turns carry <think> blocks
  bool dated_system_ = false;    // Llama 3.1: a system header with knowledge and today's date
  std::string knowledge_line_;   // "Cutting Knowledge Date: December 2023\n"
  std::string date_string_;      // "26 Jul 2024"; empty: today's date (strftime_now)
};

}  // namespace dms
