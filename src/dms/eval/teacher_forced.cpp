#include "dms/eval/teacher_forced.h"

#include <algorithm>
#include <map>
#include <memory>

#include "dms/cache/cache_sizing.h"
#include "dms/eval/cache_stack.h"
#include "dms/util/error.h"

namespace dms::eval {

bool exact_in_chunks(const std::string& policy) { return policy == "dense" || policy == "dms"; }

namespace {

// One cache per policy (index 0: the dense reference) over one batch of documents.
struct Member {
  std::unique_ptr<PagedKVCache> cache;
  std::vector<SequenceId> ids;  // per document of the batch
  int64_t step = 0;             // tokens per step
  at::Tensor hidden;            // [window rows, H]: this window's final hidden states
};

std::unique_ptr<PagedKVCache> make_cache(const ModelConfig& c, const TeacherForcedOptions& o, bool reference,
                                         const std::string& policy, const PolicyOptions& po, int64_t sequences,
                                         int64_t tokens) {
  const at::ScalarType dtype = reference ? o.reference_kv_dtype : o.kv_dtype;
  return std::make_unique<PagedKVCache>(c, dense_cache_options(c, dtype, o.block_size, sequences, tokens),
                                        make_policy(policy, po));
}

void check_options(const TeacherForcedOptions& o, const std::vector<Document>& docs) {
  if (o.chunk < 0) fail("teacher-forced", "chunk must be 0 (exact) or positive");
  if (o.window < 1 || o.batch < 1 || o.score_rows < 1)
    fail("teacher-forced", "window, batch and score_rows must be at least 1");
  for (size_t d = 0; d < docs.size(); ++d)
    if (docs[d].size() < 2) fail("teacher-forced", "document " + std::to_string(d) + " has fewer than 2 tokens");
}

}  // namespace

TeacherForcedResult run_teacher_forced(const Transformer& model, const std::vector<Document>& docs,
                                       const std::vector<PolicyUnderTest>& policies, const TeacherForcedOptions& o) {
  check_options(o, docs);
  const ModelConfig& c = model.config();
  const int64_t window = o.chunk > 0 ? o.chunk : o.window;
  TeacherForcedResult result;
  result.dense.buckets.resize(static_cast<size_t>(o.buckets.count()));
  for (const auto& p : policies) {
    PolicyQuality q{p.label, p.policy, {}, {}};
    q.quality.buckets.resize(static_cast<size_t>(o.buckets.count()));
    q.compression.n_layers = c.n_layers;
    q.compression.n_kv_heads = c.n_kv_heads;
    result.policies.push_back(std::move(q));
  }
  int64_t total = 0, done = 0;
  for (const auto& d : docs) total += static_cast<int64_t>(d.size()) - 1;
  if (o.progress) o.progress(0, total);  // the stage's clock starts here, not after its first window

  for (size_t b0 = 0; b0 < docs.size(); b0 += static_cast<size_t>(o.batch)) {
    const size_t b1 = std::min(docs.size(), b0 + static_cast<size_t>(o.batch));
    const auto B = static_cast<int64_t>(b1 - b0);
    std::vector<int64_t> fed(static_cast<size_t>(B));  // tokens each document feeds
    for (int64_t d = 0; d < B; ++d) fed[d] = static_cast<int64_t>(docs[b0 + d].size()) - 1;
    const int64_t longest = *std::max_element(fed.begin(), fed.end());

    std::vector<Member> members(policies.size() + 1);
    for (size_t m = 0; m < members.size(); ++m) {
      const bool ref = m == 0;
      const std::string name = ref ? "dense" : policies[m - 1].policy;
      members[m].cache = make_cache(c, o, ref, name, ref ? PolicyOptions{} : policies[m - 1].options, B, longest);
      members[m].step = o.chunk > 0 ? o.chunk : exact_in_chunks(name) ? window : 1;
      for (int64_t d = 0; d < B; ++d) members[m].ids.push_back(members[m].cache->add_sequence());
    }
    // Members stepped alike share each forward.
    std::map<int64_t, std::vector<size_t>> groups;
    for (size_t m = 0; m < members.size(); ++m) groups[members[m].step].push_back(m);

    for (int64_t start = 0; start < longest; start += window) {
      std::vector<int64_t> n(static_cast<size_t>(B)), offset(static_cast<size_t>(B));
      std::vector<int64_t> positions, targets;
      for (int64_t d = 0; d < B; ++d) {
        n[d] = std::clamp<int64_t>(fed[d] - start, 0, window);
        offset[d] = static_cast<int64_t>(positions.size());
        for (int64_t t = 0; t < n[d]; ++t) {
          positions.push_back(start + t);
          targets.push_back(docs[b0 + d][start + t + 1]);
        }
      }
      const auto rows = static_cast<int64_t>(positions.size());
      for (auto& m : members) m.hidden = at::empty({rows, c.hidden_size}, at::TensorOptions().dtype(model.dtype()));

      for (const auto& [step, group] : groups) {
        std::vector<PagedKVCache*> caches;
        for (size_t m : group) caches.push_back(members[m].cache.get());
        CacheStack stack(caches);
        for (int64_t k = 0; k < window; k += step) {
          std::vector<StepSequence> share;
          std::vector<int64_t> tokens, dest;
          std::vector<size_t> docs_in;
          for (int64_t d = 0; d < B; ++d) {
            const int64_t m = std::min(step, n[d] - k);
            if (m <= 0) continue;
            docs_in.push_back(static_cast<size_t>(d));
            for (int64_t t = 0; t < m; ++t) {
              tokens.push_back(docs[b0 + d][start + k + t]);
              dest.push_back(offset[d] + k + t);
            }
          }
          if (docs_in.empty()) break;
          std::vector<std::vector<StepSequence>> steps;
          std::vector<int64_t> all_tokens;
          for (size_t m : group) {
            std::vector<StepSequence> s;
            for (size_t d : docs_in) s.push_back({members[m].ids[d], std::min(step, n[d] - k)});
            steps.push_back(std::move(s));
            all_tokens.insert(all_tokens.end(), tokens.begin(), tokens.end());
          }
          stack.begin_step(steps);
          at::Tensor hidden;
          try {
            hidden = model.forward(at::tensor(all_tokens, at::kLong), stack.positions(), stack);
            stack.end_step();
          } catch (...) {
            stack.abort_step();
            throw;
          }
          const at::Tensor index = at::tensor(dest, at::kLong);
          for (size_t i = 0; i < group.size(); ++i)
            members[group[i]].hidden.index_copy_(0, index, hidden.narrow(0, stack.row0(i), stack.rows(i)));
        }
      }

      const at::Tensor target_ids = at::tensor(targets, at::kLong);
      for (int64_t r = 0; r < rows; r += o.score_rows) {
        const int64_t len = std::min(o.score_rows, rows - r);
        const std::span<const int64_t> pos(positions.data() + r, static_cast<size_t>(len));
        const at::Tensor ref = model.logits(members[0].hidden.narrow(0, r, len));
        const at::Tensor tgt = target_ids.narrow(0, r, len);
        accumulate(result.dense, o.buckets, score_rows(ref, ref, tgt), pos);
        for (size_t p = 0; p < policies.size(); ++p)
          accumulate(result.policies[p].quality, o.buckets,
                     score_rows(ref, model.logits(members[p + 1].hidden.narrow(0, r, len)), tgt), pos);
      }
      for (int64_t d = 0; d < B; ++d) {
        done += n[d];
        if (n[d] == 0 || start + n[d] < fed[d]) continue;
        for (size_t p = 0; p < policies.size(); ++p)
          result.policies[p].compression.sequences.push_back(measure_sequence(*members[p + 1].cache, members[p + 1].ids[d]));
        for (auto& m : members) m.cache->remove_sequence(m.ids[d]);
      }
      result.tokens += rows;
      if (o.progress) o.progress(done, total);
    }
  }
  return result;
}

}  // namespace dms::eval
