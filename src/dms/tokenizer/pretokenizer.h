// Hugging Face pre-tokenizers: Split (regex or string, all five behaviours), ByteLevel, Digits,
// Metaspace, Sequence. A pre-tokenizer cuts normalized text into the words BPE runs on.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "dms/tokenizer/regex.h"

namespace dms {

// A word in the making. `at_start` marks the piece that begins at offset 0 of the encoded text
// (Metaspace's "first" prepend scheme looks at it).
struct PrePiece {
  std::string text;
  bool at_start = false;
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

class PreTokenizer {
 public:
  static PreTokenizer from_json(const nlohmann::json& node, const std::string& where);

  // The configurations GGUF files name through tokenizer.ggml.pre.
  static PreTokenizer byte_level_gpt2();                       // ByteLevel(use_regex)
  static PreTokenizer digits_then_byte_level();                // Digits(individual) + ByteLevel(use_regex)
  static PreTokenizer split_then_byte_level(const std::string& pattern);  // Split(Isolated) + ByteLevel

  void apply(std::vector<PrePiece>& pieces) const;
  bool empty() const { return steps_.empty(); }

 private:
  enum class Kind { Split, ByteLevel, Digits, Metaspace };
  enum class Prepend { Always, First, Never };
  struct Step {
    Kind kind = Kind::Split;
    std::shared_ptr<const Regex> regex = nullptr;  // Split with a regex, ByteLevel with use_regex
    std::string literal = {};                      // Split with a string pattern; Metaspace replacement
    SplitBehavior behavior = SplitBehavior::Isolated;
    bool invert = false;
    bool flag = false;                    // ByteLevel add_prefix_space, Digits individual, Metaspace split
    Prepend prepend = Prepend::Always;
  };
  static void parse(const nlohmann::json& node, const std::string& where, const std::string& field,
                    std::vector<Step>& out);
  static void apply_step(const Step& step, std::vector<PrePiece>& pieces);
  std::vector<Step> steps_;
};

}  // namespace dms
