#include "dms/eval/compression.h"

#include <algorithm>

namespace dms::eval {

SequenceCompression from_stats(const SequenceStats& s) {
  SequenceCompression c;
  c.seen = s.tokens_seen;
  c.compression_ratio = s.compression_ratio;
  c.memory_ratio = s.memory_ratio;
  c.eviction_fraction = s.eviction_fraction;
  c.kv_bytes_ratio = s.dense_bytes > 0 ? static_cast<double>(s.bytes_held) / static_cast<double>(s.dense_bytes) : 1.0;
  return c;
}

SequenceCompression measure_sequence(const PagedKVCache& cache, SequenceId id) {
  const SequenceStats s = cache.sequence_stats(id);
  SequenceCompression c = from_stats(s);
  const double seen = static_cast<double>(std::max<int64_t>(s.tokens_seen, 1));
  for (int64_t l = 0; l < cache.n_layers(); ++l)
    for (int64_t g = 0; g < cache.n_kv_heads(); ++g) {
      const HeadCache& h = cache.head(id, l, g);
      c.ratio_per_head.push_back(s.tokens_seen ? seen / static_cast<double>(std::max<int64_t>(h.live(), 1)) : 1.0);
      c.eviction_per_head.push_back(static_cast<double>(h.flagged()) / seen);
    }
  return c;
}

namespace {

template <typename F>
double mean_over(const std::vector<SequenceCompression>& seqs, F field) {
  if (seqs.empty()) return 0;
  double sum = 0;
  for (const auto& s : seqs) sum += field(s);
  return sum / static_cast<double>(seqs.size());
}

std::vector<double> mean_vectors(const std::vector<SequenceCompression>& seqs,
                                 std::vector<double> SequenceCompression::*field) {
  std::vector<double> out;
  for (const auto& s : seqs) {
    const auto& v = s.*field;
    out.resize(v.size(), 0.0);
    for (size_t i = 0; i < v.size(); ++i) out[i] += v[i] / static_cast<double>(seqs.size());
  }
  return out;
}

std::vector<double> per_layer(const std::vector<double>& per_head, int64_t n_kv) {
  std::vector<double> out;
  for (size_t i = 0; n_kv > 0 && i < per_head.size(); i += static_cast<size_t>(n_kv)) {
    double sum = 0;
    for (int64_t g = 0; g < n_kv; ++g) sum += per_head[i + static_cast<size_t>(g)];
    out.push_back(sum / static_cast<double>(n_kv));
  }
  return out;
}

}  // namespace

double CompressionStats::compression_ratio() const {
  return mean_over(sequences, [](const SequenceCompression& s) { return s.compression_ratio; });
}
double CompressionStats::memory_ratio() const {
  return mean_over(sequences, [](const SequenceCompression& s) { return s.memory_ratio; });
}
double CompressionStats::eviction_fraction() const {
  return mean_over(sequences, [](const SequenceCompression& s) { return s.eviction_fraction; });
}
double CompressionStats::kv_bytes_ratio() const {
  return mean_over(sequences, [](const SequenceCompression& s) { return s.kv_bytes_ratio; });
}
std::vector<double> CompressionStats::ratio_per_head() const {
  return mean_vectors(sequences, &SequenceCompression::ratio_per_head);
}
std::vector<double> CompressionStats::eviction_per_head() const {
  return mean_vectors(sequences, &SequenceCompression::eviction_per_head);
}
std::vector<double> CompressionStats::ratio_per_layer() const { return per_layer(ratio_per_head(), n_kv_heads); }
std::vector<double> CompressionStats::eviction_per_layer() const { return per_layer(eviction_per_head(), n_kv_heads); }

std::vector<int64_t> CompressionStats::seen() const {
  std::vector<int64_t> out;
  for (const auto& s : sequences) out.push_back(s.seen);
  return out;
}

}  // namespace dms::eval
