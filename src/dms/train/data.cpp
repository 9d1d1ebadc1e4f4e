#include "dms/train/data.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "dms/util/error.h"

namespace dms {
namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

int64_t count_tokens(const std::vector<Document>& docs) {
  int64_t n = 0;
  for (const auto& d : docs) n += static_cast<int64_t>(d.tokens.size());
  return n;
}

std::string data_name(const std::vector<std::string>& paths, const std::string& what) {
  if (paths.empty()) return what;
  std::string out = what + " (";
  for (size_t i = 0; i < paths.size(); ++i) out += (i ? ", " : "") + paths[i];
  return out + ")";
}

PackedRows pack_in_order(const std::vector<Document>& docs, const std::vector<size_t>& order, int64_t seq_len) {
  std::vector<std::span<const int32_t>> spans;
  spans.reserve(order.size());
  for (size_t i : order) spans.emplace_back(docs[i].tokens);
  return pack_documents(spans, seq_len);
}

Batch empty_batch(int64_t rows, int64_t seq_len) {
  Batch b;
  b.tokens = at::empty({rows, seq_len}, at::kLong);
  b.positions = at::empty({rows, seq_len}, at::kLong);
  b.segments = at::empty({rows, seq_len}, at::kLong);
  b.loss_mask = at::empty({rows, seq_len}, at::kBool);
  return b;
}

void copy_row(const PackedRows& p, int64_t row, Batch& b, int64_t at_row) {
  const int64_t T = p.seq_len;
  const size_t from = static_cast<size_t>(row * T);
  int64_t* tok = b.tokens.data_ptr<int64_t>() + at_row * T;
  int64_t* pos = b.positions.data_ptr<int64_t>() + at_row * T;
  int64_t* seg = b.segments.data_ptr<int64_t>() + at_row * T;
  bool* mask = b.loss_mask.data_ptr<bool>() + at_row * T;
  for (int64_t t = 0; t < T; ++t) {
    tok[t] = p.tokens[from + t];
    pos[t] = p.positions[from + t];
    seg[t] = p.segments[from + t];
    mask[t] = p.loss_mask[from + t] != 0;
  }
}

template <typename T>
T field(const nlohmann::json& j, const char* name, const std::string& where) {
  auto it = j.find(name);
  if (it == j.end()) fail(where, std::string("data cursor field '") + name + "' is missing");
  if (!it->is_number_integer()) fail(where, std::string("data cursor field '") + name + "' must be an integer");
  return it->get<T>();
}

}  // namespace

int64_t Batch::real_tokens() const { return segments.ge(0).sum().item<int64_t>(); }
int64_t Batch::loss_tokens() const { return loss_mask.sum().item<int64_t>(); }

nlohmann::json DataCursor::to_json() const {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(content_hash));
  // The 64-bit values travel as strings: JSON readers elsewhere hold numbers as doubles.
  return {{"epoch", epoch},         {"row", row},       {"seq_len", seq_len},          {"seed", std::to_string(seed)},
          {"documents", documents}, {"tokens", tokens}, {"content_hash", std::string(hash)}};
}

DataCursor DataCursor::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "data cursor must be a JSON object");
  DataCursor c;
  c.epoch = field<int64_t>(j, "epoch", where);
  c.row = field<int64_t>(j, "row", where);
  c.seq_len = field<int64_t>(j, "seq_len", where);
  c.documents = field<int64_t>(j, "documents", where);
  c.tokens = field<int64_t>(j, "tokens", where);
  auto text = [&](const char* name, int base) {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) fail(where, std::string("data cursor field '") + name + "' must be a string");
    const std::string s = it->get<std::string>();
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s.c_str(), &end, base);
    if (s.empty() || *end != '\0' || errno != 0 || s[0] == '-')
      fail(where, std::string("data cursor field '") + name + "' is not a number: '" + s + "'");
    return static_cast<uint64_t>(v);
  };
  c.seed = text("seed", 10);
  c.content_hash = text("content_hash", 16);
  return c;
}

TrainingData TrainingData::load(const DataOptions& options, const Tokenizer& tokenizer,
                                const ChatTemplate& chat_template) {
  if (options.paths.empty()) fail("training data", "no data files given");
  std::vector<Document> heldout;
  if (!options.heldout_paths.empty()) heldout = read_documents(options.heldout_paths, tokenizer, chat_template);
  return TrainingData(read_documents(options.paths, tokenizer, chat_template), std::move(heldout), options);
}

TrainingData::TrainingData(std::vector<Document> documents, std::vector<Document> heldout, const DataOptions& options)
    : options_(options), heldout_(std::move(heldout)) {
  const std::string name = data_name(options.paths, "training data");
  const double f = options.heldout_fraction;
  if (!(f >= 0 && f < 1)) fail("held-out fraction", "must be in [0, 1), got " + std::to_string(f));
  if (f > 0 && !options.heldout_paths.empty())
    fail("held-out fraction", "give either held-out files or a held-out fraction of the training data, not both");
  if (options.seq_len < 2) fail("sequence length", "must be at least 2, got " + std::to_string(options.seq_len));
  if (documents.empty()) fail(name, "holds no documents");
  const size_t all = documents.size();
  for (auto& d : documents) {
    if (f > 0 && in_heldout_split(d.split_key, f)) heldout_.push_back(std::move(d));
    else train_.push_back(std::move(d));
  }
  if (f > 0 && heldout_.empty())
    fail(name, "a held-out fraction of " + std::to_string(f) + " selects none of its " + std::to_string(all) +
                   " documents; raise it or give held-out files");
  train_tokens_ = count_tokens(train_);
  if (train_tokens_ < options.seq_len) {
    std::string held = f > 0 ? " after holding out " + std::to_string(heldout_.size()) + " of " + std::to_string(all) +
                                   " documents (" + std::to_string(heldout_tokens()) + " tokens)"
                             : "";
    fail(name, "holds " + std::to_string(train_tokens_) + " tokens in " + std::to_string(train_.size()) +
                   " documents" + held + "; one sequence needs " + std::to_string(options.seq_len) + " tokens");
  }
  rows_per_epoch_ = (train_tokens_ + options.seq_len - 1) / options.seq_len;
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& d : train_) {
    const uint64_t n = d.tokens.size();
    h = fnv1a(h, &n, sizeof n);
    h = fnv1a(h, d.tokens.data(), d.tokens.size() * sizeof(int32_t));
  }
  content_hash_ = h;
}

int64_t TrainingData::heldout_tokens() const { return count_tokens(heldout_); }

std::string TrainingData::describe() const {
  std::string out = "train: " + std::to_string(train_.size()) + " documents, " + std::to_string(train_tokens_) +
                    " tokens, " + std::to_string(rows_per_epoch_) + " rows of " + std::to_string(options_.seq_len) +
                    " per epoch";
  if (heldout_.empty()) return out + " | nothing held out";
  const int64_t ht = heldout_tokens();
  return out + " | held out: " + std::to_string(heldout_.size()) + " documents, " + std::to_string(ht) + " tokens, " +
         std::to_string((ht + options_.seq_len - 1) / options_.seq_len) + " rows";
}

std::vector<size_t> TrainingData::epoch_order(int64_t epoch) const {
  std::vector<size_t> order(train_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  uint64_t state = options_.seed;
  state = splitmix64(state) ^ static_cast<uint64_t>(epoch);
  for (size_t i = order.size(); i > 1; --i) {
    // A uniform index below i from the high bits of a 64-bit draw.
    const auto j = static_cast<size_t>((static_cast<unsigned __int128>(splitmix64(state)) * i) >> 64);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

const PackedRows& TrainingData::packed_epoch(int64_t epoch) {
  if (packed_for_ != epoch) {
    packed_ = pack_in_order(train_, epoch_order(epoch), options_.seq_len);
    packed_for_ = epoch;
  }
  return packed_;
}

Batch TrainingData::next_batch(int64_t rows, int64_t rank, int64_t world) {
  if (rows < 1) fail("batch", "rows must be at least 1, got " + std::to_string(rows));
  if (world < 1 || rank < 0 || rank >= world)
    fail("batch", "rank " + std::to_string(rank) + " is not in a world of " + std::to_string(world));
  Batch b = empty_batch(rows, options_.seq_len);
  for (int64_t k = 0; k < rows * world; ++k) {
    if (k / rows == rank) copy_row(packed_epoch(epoch_), row_, b, k % rows);
    if (++row_ == rows_per_epoch_) {
      row_ = 0;
      ++epoch_;
    }
  }
  return b;
}

DataCursor TrainingData::cursor() const {
  DataCursor c;
  c.epoch = epoch_;
  c.row = row_;
  c.seq_len = options_.seq_len;
  c.seed = options_.seed;
  c.documents = static_cast<int64_t>(train_.size());
  c.tokens = train_tokens_;
  c.content_hash = content_hash_;
  return c;
}

void TrainingData::restore(const DataCursor& c) {
  const std::string where = "data cursor";
  auto differs = [&](const std::string& what, const std::string& saved, const std::string& now) {
    fail(where, "was saved with " + what + " " + saved + ", the data now has " + now +
                    "; resume with the data, sequence length and seed of the checkpoint");
  };
  if (c.seq_len != options_.seq_len) differs("sequence length", std::to_string(c.seq_len), std::to_string(options_.seq_len));
  if (c.seed != options_.seed) differs("seed", std::to_string(c.seed), std::to_string(options_.seed));
  if (c.documents != static_cast<int64_t>(train_.size()))
    differs("training documents", std::to_string(c.documents), std::to_string(train_.size()));
  if (c.tokens != train_tokens_) differs("training tokens", std::to_string(c.tokens), std::to_string(train_tokens_));
  if (c.content_hash != content_hash_) differs("content hash", std::to_string(c.content_hash), std::to_string(content_hash_));
  if (c.epoch < 0 || c.row < 0 || c.row >= rows_per_epoch_)
    fail(where, "epoch " + std::to_string(c.epoch) + " row " + std::to_string(c.row) + " is outside the " +
                    std::to_string(rows_per_epoch_) + " rows of an epoch");
  epoch_ = c.epoch;
  row_ = c.row;
}

std::vector<Batch> TrainingData::heldout_batches(int64_t rows) const {
  if (rows < 1) fail("held-out batch", "rows must be at least 1, got " + std::to_string(rows));
  std::vector<Batch> out;
  if (heldout_.empty()) return out;
  std::vector<size_t> order(heldout_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const PackedRows p = pack_in_order(heldout_, order, options_.seq_len);
  for (int64_t first = 0; first < p.rows; first += rows) {
    const int64_t n = std::min(rows, p.rows - first);
    Batch b = empty_batch(n, options_.seq_len);
    for (int64_t r = 0; r < n; ++r) copy_row(p, first + r, b, r);
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace dms
