#include "dms/tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "dms/tokenizer/utf8.h"

namespace dms {

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab, const std::vector<BpeMerge>& merges,
                   Options options)
    : vocab_(std::move(vocab)), byte_ids_(256, -1), options_(options) {
  std::unordered_map<int32_t, const std::string*> text_of;
  text_of.reserve(vocab_.size());
  for (const auto& [text, id] : vocab_) text_of[id] = &text;
  merges_.reserve(merges.size());
  for (const auto& m : merges) {
    auto merged = vocab_.find(*text_of.at(m.left) + *text_of.at(m.right));
    // An earlier merge of the same pair wins, as in tokenizers' merge map.
    merges_.emplace(key(m.left, m.right), MergeResult{m.rank, merged->second});
  }
  if (options_.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      if (auto it = vocab_.find(name); it != vocab_.end()) byte_ids_[b] = it->second;
    }
  }
}

std::optional<int32_t> BpeModel::find(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

namespace {

struct Symbol {
  int32_t id;
  int32_t prev, next;  // neighbours in the live list, -1 at the ends
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;     // index of the left symbol
  int32_t new_id;
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = find(word)) {
      out.push_back(*id);
      return;
    }
  }

  // Initial symbols: one per character; unknown characters fall back to bytes or to unk.
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool previous_unk = false;
  auto push = [&](int32_t id) {
    int32_t idx = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, idx - 1, -1, true});
    if (idx > 0) symbols[idx - 1].next = idx;
  };
  std::string ch;
  utf8::for_each_char(word, [&](char32_t, size_t pos, size_t len) {
    ch.assign(word.substr(pos, len));
    if (auto it = vocab_.find(ch); it != vocab_.end()) {
      push(it->second);
      previous_unk = false;
      return;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (unsigned char b : ch) all = all && byte_ids_[b] >= 0;
      if (all) {
        for (unsigned char b : ch) push(byte_ids_[b]);
        previous_unk = false;
        return;
      }
    }
    if (options_.unk_id) {
      if (!(options_.fuse_unk && previous_unk)) push(*options_.unk_id);
      previous_unk = true;
    }
  });

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto consider = [&](int32_t left) {
    int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.rank, left, it->second.id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) consider(i);

  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Entries go stale when either side has merged since; the pair must still make new_id.
    auto it = merges_.find(key(left.id, right.id));
    if (it == merges_.end() || it->second.id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(top.pos);
  }
  for (const auto& s : symbols) if (s.alive) out.push_back(s.id);
}

}  // namespace dms
