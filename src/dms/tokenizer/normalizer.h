// Hugging Face normalizers: NFC/NFD/NFKC/NFKD, Prepend, Replace (string patterns), Sequence.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace dms {

class Normalizer {
 public:
  // `node` is the tokenizer.json "normalizer" value (null for none); `where` names the file.
  static Normalizer from_json(const nlohmann::json& node, const std::string& where);
  static Normalizer nfc();
  // Legacy SentencePiece (Llama 2): optional Prepend("▁"), then Replace(" ", "▁").
  static Normalizer sentencepiece(bool add_prefix);

  std::string apply(std::string text) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { NFC, NFD, NFKC, NFKD, Prepend, Replace };
  struct Step {
    Kind kind;
    std::string a, b;  // Prepend: a = prefix; Replace: a -> b
  };
  static void parse(const nlohmann::json& node, const std::string& where, const std::string& field,
                    std::vector<Step>& out);
  std::vector<Step> steps_;
};

}  // namespace dms
