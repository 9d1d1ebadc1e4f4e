#include "dms/eval/retrieval.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>

#include "dms/util/error.h"

namespace dms::eval {
namespace {

// Varied but uninformative sentences: nothing in them looks like a key.
constexpr const char* kFiller[] = {
    " The river runs past the old mill and on towards the sea.",
    " Clouds gathered over the hills in the late afternoon.",
    " A farmer walked along the road with his dog beside him.",
    " The market square was quiet before the shops opened.",
    " Leaves drifted down from the tall trees in the park.",
    " Someone was playing a slow tune on a piano upstairs.",
    " The train left the station a few minutes after noon.",
    " Bread was baking in the small kitchen at the back of the house.",
};
constexpr const char* kIntro = "There is a pass key hidden in the text below. Find it and remember it.\n";
constexpr const char* kQuestion = "\nWhat is the pass key? The pass key is";

std::string needle_text(const std::string& key) {
  return " The pass key is " + key + ". Remember it. " + key + " is the pass key.";
}

}  // namespace

std::vector<RetrievalItem> make_retrieval_items(const Tokenizer& tok, const RetrievalOptions& o) {
  if (o.trials < 1) fail("retrieval", "need at least 1 trial per length and depth");
  for (double d : o.depths)
    if (!(d >= 0 && d <= 1)) fail("retrieval", "depth " + std::to_string(d) + " is outside [0, 1]");
  const std::vector<int32_t> intro = tok.encode(kIntro, o.add_bos && tok.bos_id().has_value());
  const std::vector<int32_t> question = tok.encode(kQuestion, false);
  std::vector<std::vector<int32_t>> sentences;
  for (const char* s : kFiller) sentences.push_back(tok.encode(s, false));

  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> digit(10000, 99999);
  std::vector<RetrievalItem> items;
  for (int64_t length : o.lengths)
    for (double depth : o.depths)
      for (int64_t trial = 0; trial < o.trials; ++trial) {
        RetrievalItem it;
        it.length = length;
        it.depth = depth;
        it.answer = std::to_string(digit(rng));
        const std::vector<int32_t> needle = tok.encode(needle_text(it.answer), false);
        it.needle_tokens = static_cast<int64_t>(needle.size());
        const int64_t room = length - static_cast<int64_t>(intro.size() + needle.size() + question.size());
        // Whole sentences, cycling through the filler, as many as fit.
        std::vector<size_t> filler;
        int64_t filler_tokens = 0;
        for (size_t s = 0;; s = (s + 1) % sentences.size()) {
          const auto n = static_cast<int64_t>(sentences[s].size());
          if (filler_tokens + n > room) break;
          filler.push_back(s);
          filler_tokens += n;
        }
        if (filler.empty())
          fail("retrieval", "length " + std::to_string(length) + " is too short for the intro, key, question and filler");
        // The needle goes at the sentence boundary nearest depth * filler tokens.
        const int64_t target = std::llround(depth * static_cast<double>(filler_tokens));
        size_t before = 0;
        int64_t acc = 0, best = target;
        for (size_t i = 0; i < filler.size(); ++i) {
          acc += static_cast<int64_t>(sentences[filler[i]].size());
          if (std::llabs(acc - target) < best) {
            best = std::llabs(acc - target);
            before = i + 1;
          }
        }
        it.prompt = intro;
        for (size_t i = 0; i < filler.size(); ++i) {
          if (i == before) {
            it.needle_pos = static_cast<int64_t>(it.prompt.size());
            it.prompt.insert(it.prompt.end(), needle.begin(), needle.end());
          }
          it.prompt.insert(it.prompt.end(), sentences[filler[i]].begin(), sentences[filler[i]].end());
        }
        if (before == filler.size()) {
          it.needle_pos = static_cast<int64_t>(it.prompt.size());
          it.prompt.insert(it.prompt.end(), needle.begin(), needle.end());
        }
        it.prompt.insert(it.prompt.end(), question.begin(), question.end());
        items.push_back(std::move(it));
      }
  return items;
}

bool answer_found(const std::string& output, const std::string& answer) {
  if (answer.empty()) return false;
  auto digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  for (size_t at = output.find(answer); at != std::string::npos; at = output.find(answer, at + 1)) {
    const bool before = at > 0 && digit(output[at - 1]);
    const bool after = at + answer.size() < output.size() && digit(output[at + answer.size()]);
    if (!before && !after) return true;
  }
  return false;
}

}  // namespace dms::eval
