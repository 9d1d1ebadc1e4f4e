#include "dms/tokenizer/tokenizer.h"

#include <algorithm>

#include "dms/tokenizer/tokenizer_impl.h"
#include "dms/tokenizer/utf8.h"
#include "dms/util/error.h"

namespace dms {

void TokenizerImpl::finalize() {
  int32_t max_id = -1;
  for (const auto& [text, id] : model->vocab()) max_id = std::max(max_id, id);
  for (const auto& t : added) max_id = std::max(max_id, t.id);
  // Ids index a table; a stray huge id must be an error, not a huge allocation.
  size_t entries = model->vocab().size() + added.size();
  if (static_cast<size_t>(max_id) >= entries) {
    fail(source, "token id " + std::to_string(max_id) + " is out of range: there are only " +
                     std::to_string(entries) + " vocabulary and added-token entries");
  }
  tokens.assign(static_cast<size_t>(max_id + 1), {});
  present.assign(tokens.size(), 0);
  special.assign(tokens.size(), 0);
  for (const auto& [text, id] : model->vocab()) {
    tokens[id] = text;
    present[id] = 1;
  }
  // An added token's content is what decoding sees for its id, as in tokenizers.
  for (const auto& t : added) {
    tokens[t.id] = t.content;
    present[t.id] = 1;
    special[t.id] = t.special ? 1 : 0;
  }
  raw_added = AddedTokenMatcher(added, false);
  normalized_added = AddedTokenMatcher(added, true);
}

Tokenizer::Tokenizer(std::unique_ptr<TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  const auto& m = *impl_;
  if (size_t bad = utf8::first_invalid(text); bad != std::string_view::npos) {
    fail("encode", "text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  }
  std::vector<int32_t> ids;
  if (add_bos && m.bos) ids.push_back(*m.bos);

  std::vector<TextSegment> raw;
  m.raw_added.split(std::string(text), true, raw);
  std::vector<TextSegment> segments;
  for (auto& seg : raw) {
    if (seg.id >= 0) {
      segments.push_back(std::move(seg));
      continue;
    }
    m.normalized_added.split(m.normalizer.apply(std::move(seg.text)), seg.at_start, segments);
  }
  std::vector<PrePiece> pieces;
  for (auto& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pieces.clear();
    pieces.push_back({std::move(seg.text), seg.at_start});
    m.pre_tokenizer.apply(pieces);
    for (const auto& p : pieces) m.model->encode_word(p.text, ids);
  }
  return ids;
}

namespace {

void check_id(const TokenizerImpl& m, int32_t id) {
  if (id < 0 || static_cast<size_t>(id) >= m.tokens.size() || !m.present[id]) {
    fail("decode", "token id " + std::to_string(id) + " is not in the vocabulary of " + m.source +
                       " (size " + std::to_string(m.tokens.size()) + ")");
  }
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  StreamDecoder stream(*this, skip_special);
  std::string out;
  for (int32_t id : ids) out += stream.push(id);
  out += stream.finish();
  return out;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->tokens.size()); }
std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos_default() const { return impl_->add_bos; }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  for (const auto& t : impl_->added) {
    if (t.content == token) return t.id;
  }
  return impl_->model->find(token);
}

std::string Tokenizer::token_text(int32_t id) const {
  check_id(*impl_, id);
  return impl_->tokens[id];
}

const std::string& Tokenizer::chat_template_source() const { return impl_->chat_template; }

std::string Tokenizer::piece_bytes(int32_t id, bool first) const {
  check_id(*impl_, id);
  return impl_->decoder.piece(impl_->tokens[id], first);
}

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special), stream_(std::make_unique<DecodeStream>(tok.impl_->decoder)) {}
StreamDecoder::~StreamDecoder() = default;
StreamDecoder::StreamDecoder(StreamDecoder&&) noexcept = default;

std::string StreamDecoder::push(int32_t id) {
  const auto& m = *tok_->impl_;
  check_id(m, id);
  if (skip_special_ && m.special[id]) return {};
  return stream_->push(m.tokens[id]);
}

std::string StreamDecoder::finish() {
  std::string out = stream_->finish();
  stream_ = std::make_unique<DecodeStream>(tok_->impl_->decoder);
  return out;
}

}  // namespace dms
