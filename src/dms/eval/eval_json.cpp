#include "dms/eval/eval_json.h"

#include <algorithm>

namespace dms::eval {
namespace {

using nlohmann::json;

json quality_json(const QualityTotals& q) {
  return {{"tokens", q.tokens}, {"kl", q.mean_kl()}, {"top1", q.top1()}, {"nll", q.tokens ? q.nll_sum / q.tokens : 0.0},
          {"ppl", q.perplexity()}};
}

json quality_stats_json(const QualityStats& s, const ContextBuckets& buckets) {
  json per_bucket = json::array();
  for (int64_t i = 0; i < buckets.count(); ++i) {
    const QualityTotals& q = s.buckets.at(static_cast<size_t>(i));
    if (q.tokens == 0) continue;
    json b = quality_json(q);
    b["bucket"] = buckets.label(i);
    per_bucket.push_back(std::move(b));
  }
  return {{"overall", quality_json(s.overall())}, {"buckets", per_bucket}};
}

// [layer][head] from [layer * n_kv + head].
json per_head_json(const std::vector<double>& flat, int64_t n_kv) {
  json rows = json::array();
  for (size_t i = 0; n_kv > 0 && i < flat.size(); i += static_cast<size_t>(n_kv))
    rows.push_back(std::vector<double>(flat.begin() + static_cast<std::ptrdiff_t>(i),
                                       flat.begin() + static_cast<std::ptrdiff_t>(i) + n_kv));
  return rows;
}

json compression_json(const CompressionStats& c, bool per_head) {
  json j = {{"ratio", c.compression_ratio()},
            {"memory_ratio", c.memory_ratio()},
            {"eviction_fraction", c.eviction_fraction()},
            {"kv_bytes_ratio", c.kv_bytes_ratio()},
            {"sequences", c.sequences.size()}};
  if (per_head) {
    j["per_layer"] = {{"ratio", c.ratio_per_layer()}, {"eviction_fraction", c.eviction_per_layer()}};
    j["per_head"] = {{"ratio", per_head_json(c.ratio_per_head(), c.n_kv_heads)},
                     {"eviction_fraction", per_head_json(c.eviction_per_head(), c.n_kv_heads)}};
  }
  return j;
}

json entry_json(const PolicyEntry& e, bool per_head) {
  json j = {{"label", e.label},
            {"policy", e.policy},
            {"budget_ratio", e.budget_ratio > 0 ? json(e.budget_ratio) : json(nullptr)},
            {"target_cr", e.target_cr > 0 ? json(e.target_cr) : json(nullptr)},
            {"matched", e.matched()},
            {"compression", compression_json(e.compression, per_head)}};
  return j;
}

json retrieval_json(const RetrievalEntry& e, const EvalReport& r, const std::vector<double>& depths) {
  json j = entry_json(e, false);
  j["length"] = e.length;
  j["accuracy"] = e.accuracy();
  json by_depth = json::array();
  for (double d : depths) by_depth.push_back({{"depth", d}, {"accuracy", e.accuracy_at_depth(r.retrieval_items, d)}});
  j["by_depth"] = by_depth;
  json items = json::array();
  for (size_t i = 0; i < e.items.size(); ++i)
    items.push_back({{"item", e.items[i]}, {"correct", e.correct[i] != 0}, {"output", e.outputs[i]}});
  j["items"] = items;
  return j;
}

}  // namespace

json report_json(const EvalReport& r, const json& header) {
  json out = {{"schema", kEvalSchema}};
  for (const auto& [k, v] : header.items()) out[k] = v;

  json buckets = json::array();
  for (int64_t i = 0; i < r.buckets.count(); ++i)
    buckets.push_back({{"label", r.buckets.label(i)},
                       {"lo", r.buckets.lo(i)},
                       {"hi", r.buckets.hi(i) < 0 ? json(nullptr) : json(r.buckets.hi(i))}});
  out["buckets"] = buckets;
  out["documents"] = {{"count", r.document_tokens.size()}, {"tokens", r.document_tokens}};
  out["dms_window"] = r.window;
  out["baseline_min_tokens"] = r.baseline_min_tokens;

  std::vector<double> depths;
  for (const auto& it : r.retrieval_items)
    if (std::find(depths.begin(), depths.end(), it.depth) == depths.end()) depths.push_back(it.depth);
  json items = json::array();
  for (const auto& it : r.retrieval_items)
    items.push_back({{"length", it.length},
                     {"depth", it.depth},
                     {"answer", it.answer},
                     {"prompt_tokens", it.prompt.size()},
                     {"needle_pos", it.needle_pos}});
  out["retrieval_items"] = items;

  json dense_retrieval = json::array();
  for (const auto& e : r.dense_retrieval) dense_retrieval.push_back(retrieval_json(e, r, depths));
  out["dense"] = {{"teacher_forced", quality_stats_json(r.dense, r.buckets)}, {"retrieval", dense_retrieval}};

  json points = json::array();
  for (const auto& p : r.points) {
    json tf = json::array();
    for (const auto& e : p.teacher_forced) {
      json j = entry_json(e, true);
      j["quality"] = quality_stats_json(e.quality, r.buckets);
      tf.push_back(std::move(j));
    }
    json fr = json::array();
    for (const auto& e : p.free_running) {
      json j = entry_json(e, false);
      j["mean_prefix"] = e.mean_prefix();
      j["identical_share"] = e.identical_share();
      j["position_match"] = e.position_match();
      std::vector<int64_t> prefix;
      for (const auto& a : e.agreement) prefix.push_back(a.prefix);
      j["prefix"] = prefix;
      fr.push_back(std::move(j));
    }
    json rt = json::array();
    for (const auto& e : p.retrieval) rt.push_back(retrieval_json(e, r, depths));
    points.push_back({{"label", p.label},
                      {"forced_fraction", p.forced_fraction < 0 ? json(nullptr) : json(p.forced_fraction)},
                      {"teacher_forced", tf},
                      {"free_running", fr},
                      {"retrieval", rt}});
  }
  out["points"] = points;
  out["free_running"] = {{"prompts", r.prompts.size()},
                         {"prompt_tokens", r.prompts.empty() ? 0 : r.prompts.front().size()}};
  out["seconds"] = r.seconds;
  return out;
}

}  // namespace dms::eval
