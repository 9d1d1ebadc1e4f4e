// The BPE model: vocabulary, ranked merges and the merge loop (lowest rank first, leftmost first
// among equal ranks), with byte fallback and unknown-token handling as Hugging Face BPE does.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dms {

struct BpeMerge {
  int32_t left, right;
  int32_t rank;  // lower merges first; equal ranks resolve leftmost first
};

class BpeModel {
 public:
  struct Options {
    bool byte_fallback = false;        // unknown characters become <0xXX> tokens
    bool ignore_merges = false;        // a word that is itself a token is taken whole
    bool fuse_unk = false;             // consecutive unknowns collapse into one unk token
    std::optional<int32_t> unk_id;     // token for characters with no entry
  };

  // `vocab` maps token text to id (ids need not be dense); each merge's concatenation must be
  // in the vocabulary (callers check and report it with the file name).
  BpeModel(std::unordered_map<std::string, int32_t> vocab, const std::vector<BpeMerge>& merges,
           Options options);

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> find(std::string_view token) const;
  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct MergeResult {
    int32_t rank, id;
  };
  static uint64_t key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, MergeResult> merges_;
  std::vector<int32_t> byte_ids_;  // <0xXX> token per byte, -1 where the vocabulary has none
  Options options_;
};

}  // namespace dms
