#include "dms/eval/evaluation.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "dms/eval/matched_budget.h"
#include "dms/util/error.h"

namespace dms::eval {

bool PolicyEntry::matched() const {
  return target_cr <= 0 || within_tolerance(compression.memory_ratio(), target_cr);
}

double FreeRunningEntry::mean_prefix() const {
  if (agreement.empty()) return 0;
  double sum = 0;
  for (const auto& a : agreement) sum += static_cast<double>(a.prefix);
  return sum / static_cast<double>(agreement.size());
}

double FreeRunningEntry::identical_share() const {
  if (agreement.empty()) return 0;
  int64_t same = 0;
  for (const auto& a : agreement) same += a.prefix == a.compared;
  return static_cast<double>(same) / static_cast<double>(agreement.size());
}

double FreeRunningEntry::position_match() const {
  int64_t matches = 0, compared = 0;
  for (const auto& a : agreement) matches += a.matches, compared += a.compared;
  return compared ? static_cast<double>(matches) / static_cast<double>(compared) : 0.0;
}

double RetrievalEntry::accuracy() const {
  if (correct.empty()) return 0;
  return static_cast<double>(std::count(correct.begin(), correct.end(), 1)) / static_cast<double>(correct.size());
}

double RetrievalEntry::accuracy_at_depth(const std::vector<RetrievalItem>& all, double depth) const {
  int64_t n = 0, right = 0;
  for (size_t i = 0; i < items.size(); ++i)
    if (all[items[i]].depth == depth) ++n, right += correct[i];
  return n ? static_cast<double>(right) / static_cast<double>(n) : 0.0;
}

std::vector<std::vector<int32_t>> cut_prompts(const std::vector<Document>& docs, int64_t n, int64_t prompt_tokens) {
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& d : docs)
    for (size_t at = 0; at + static_cast<size_t>(prompt_tokens) <= d.size() && static_cast<int64_t>(prompts.size()) < n;
         at += static_cast<size_t>(prompt_tokens))
      prompts.emplace_back(d.begin() + static_cast<std::ptrdiff_t>(at),
                           d.begin() + static_cast<std::ptrdiff_t>(at) + prompt_tokens);
  return prompts;
}

namespace {

std::string point_label(double forced_fraction) {
  if (forced_fraction < 0) return "dms";
  char buf[48];
  std::snprintf(buf, sizeof buf, "dms f=%g", forced_fraction);
  return buf;
}

void check_options(const Model& model, const EvalOptions& o) {
  for (const auto& b : o.baselines)
    if (!is_budget_policy(b)) fail("baselines", "'" + b + "' is not a budget policy (" + joined(budget_policy_names()) + ")");
  for (double f : o.forced_fractions)
    if (!(f >= 0 && f <= 1)) fail("forced eviction", "fraction " + std::to_string(f) + " is outside [0, 1]");
  if (o.forced_fractions.empty() && !model.info.config.dms.decides())
    fail(model.info.path, "has no DMS decision heads: give forced eviction fractions or a DMS adapter");
  if (o.free_running && (o.prompts < 1 || o.prompt_tokens < 1 || o.new_tokens < 1))
    fail("free-running", "prompts, prompt tokens and new tokens must be at least 1");
}

class Evaluation {
 public:
  Evaluation(const Model& model, const std::vector<Document>& docs, const EvalOptions& o)
      : model_(model), docs_(docs), o_(o) {
    report_.buckets = o.teacher_forced.buckets;
    for (const auto& d : docs) report_.document_tokens.push_back(static_cast<int64_t>(d.size()));
    report_.window = model.info.config.dms.window;
    report_.baseline_min_tokens =
        o.baseline_min_tokens > 0 ? o.baseline_min_tokens : std::max(report_.window, o.sinks + 1);
    if (o.forced_fractions.empty()) {
      report_.points.push_back({point_label(-1), -1, {}, {}, {}});
    } else {
      for (double f : o.forced_fractions) report_.points.push_back({point_label(f), f, {}, {}, {}});
    }
  }

  EvalReport run() {
    const auto t0 = std::chrono::steady_clock::now();
    teacher_forced();
    if (o_.free_running) free_running();
    if (o_.retrieval) retrieval();
    report_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return std::move(report_);
  }

 private:
  PolicyUnderTest dms_policy(const PointReport& p) const {
    PolicyUnderTest t{p.label, "dms", {}};
    t.options.dms = {report_.window, p.forced_fraction, o_.seed};
    return t;
  }

  // The baseline `name` with the budget whose compression on sequences of `seen` tokens is
  // nearest `target`.
  PolicyUnderTest baseline_policy(const std::string& name, const std::vector<int64_t>& seen, double target,
                                  double& ratio) const {
    ratio = matched_ratio(seen, target, report_.baseline_min_tokens);
    PolicyUnderTest t{name, name, {}};
    t.options.budget = Budget{ratio, 0, report_.baseline_min_tokens};
    t.options.sinks = o_.sinks;
    t.options.recent_share = o_.recent_share;
    return t;
  }

  std::function<void(int64_t, int64_t)> progress(const std::string& stage) const {
    if (!o_.progress) return {};
    return [this, stage](int64_t done, int64_t total) { o_.progress(stage, done, total); };
  }

  template <typename Entry>
  static Entry entry(const PolicyUnderTest& p, CompressionStats compression, double ratio = 0, double target = 0) {
    Entry e;
    e.label = p.label;
    e.policy = p.policy;
    e.budget_ratio = ratio;
    e.target_cr = target;
    e.compression = std::move(compression);
    return e;
  }

  void teacher_forced() {
    TeacherForcedOptions tf = o_.teacher_forced;
    std::vector<PolicyUnderTest> dms;
    for (const auto& p : report_.points) dms.push_back(dms_policy(p));
    tf.progress = progress("teacher-forced: dense and dms");
    TeacherForcedResult first = run_teacher_forced(*model_.transformer, docs_, dms, tf);
    report_.dense = first.dense;
    for (size_t i = 0; i < dms.size(); ++i) {
      auto e = entry<TeacherForcedEntry>(dms[i], first.policies[i].compression);
      e.quality = first.policies[i].quality;
      report_.points[i].teacher_forced.push_back(std::move(e));
    }
    if (o_.baselines.empty()) return;

    std::vector<PolicyUnderTest> baselines;
    std::vector<std::pair<size_t, double>> where;  // point, ratio
    for (size_t i = 0; i < dms.size(); ++i)
      for (const auto& name : o_.baselines) {
        double ratio = 0;
        const CompressionStats& c = first.policies[i].compression;
        baselines.push_back(baseline_policy(name, c.seen(), c.memory_ratio(), ratio));
        where.push_back({i, ratio});
      }
    tf.progress = progress("teacher-forced: dense and matched baselines");
    TeacherForcedResult second = run_teacher_forced(*model_.transformer, docs_, baselines, tf);
    for (size_t j = 0; j < baselines.size(); ++j) {
      auto& point = report_.points[where[j].first];
      auto e = entry<TeacherForcedEntry>(baselines[j], second.policies[j].compression, where[j].second,
                                         point.teacher_forced.front().compression.memory_ratio());
      e.quality = second.policies[j].quality;
      point.teacher_forced.push_back(std::move(e));
    }
  }

  // Runs `runs` engine passes for a section, counting them for progress.
  GreedyRun greedy(const PolicyUnderTest& p, const std::vector<std::vector<int32_t>>& prompts, int64_t new_tokens,
                   const std::string& stage, int64_t& done, int64_t total) const {
    GreedyRun r = run_greedy(model_, p, prompts, new_tokens, o_.engine);
    if (o_.progress) o_.progress(stage, ++done, total);
    return r;
  }

  void free_running() {
    report_.prompts = cut_prompts(docs_, o_.prompts, o_.prompt_tokens);
    if (report_.prompts.empty())
      fail("free-running", "no document holds a prompt of " + std::to_string(o_.prompt_tokens) + " tokens");
    const std::string stage = "free-running";
    const auto total = static_cast<int64_t>(1 + report_.points.size() * (1 + o_.baselines.size()));
    int64_t done = 0;
    if (o_.progress) o_.progress(stage, 0, total);
    const PolicyUnderTest dense{"dense", "dense", {}};
    const GreedyRun ref = greedy(dense, report_.prompts, o_.new_tokens, stage, done, total);
    auto compare = [&](FreeRunningEntry& e, const GreedyRun& run) {
      for (size_t i = 0; i < ref.tokens.size(); ++i) e.agreement.push_back(compare_continuations(ref.tokens[i], run.tokens[i]));
    };
    for (auto& point : report_.points) {
      const PolicyUnderTest dms = dms_policy(point);
      const GreedyRun d = greedy(dms, report_.prompts, o_.new_tokens, stage, done, total);
      auto e = entry<FreeRunningEntry>(dms, d.compression);
      compare(e, d);
      point.free_running.push_back(std::move(e));
      for (const auto& name : o_.baselines) {
        double ratio = 0;
        const PolicyUnderTest b = baseline_policy(name, d.compression.seen(), d.compression.memory_ratio(), ratio);
        const GreedyRun run = greedy(b, report_.prompts, o_.new_tokens, stage, done, total);
        auto be = entry<FreeRunningEntry>(b, run.compression, ratio, d.compression.memory_ratio());
        compare(be, run);
        point.free_running.push_back(std::move(be));
      }
    }
  }

  RetrievalEntry retrieval_entry(const PolicyUnderTest& p, const GreedyRun& run, int64_t length,
                                 const std::vector<size_t>& items, double ratio = 0, double target = 0) const {
    auto e = entry<RetrievalEntry>(p, run.compression, ratio, target);
    e.length = length;
    e.items = items;
    e.outputs = run.texts;
    for (size_t i = 0; i < items.size(); ++i)
      e.correct.push_back(answer_found(run.texts[i], report_.retrieval_items[items[i]].answer));
    return e;
  }

  void retrieval() {
    RetrievalOptions ro = o_.retrieval_items;
    report_.retrieval_items = make_retrieval_items(*model_.tokenizer, ro);
    const std::string stage = "retrieval";
    const auto total = static_cast<int64_t>(ro.lengths.size() * (1 + report_.points.size() * (1 + o_.baselines.size())));
    int64_t done = 0;
    if (o_.progress) o_.progress(stage, 0, total);
    for (int64_t length : ro.lengths) {
      std::vector<size_t> items;
      std::vector<std::vector<int32_t>> prompts;
      for (size_t i = 0; i < report_.retrieval_items.size(); ++i)
        if (report_.retrieval_items[i].length == length) {
          items.push_back(i);
          prompts.push_back(report_.retrieval_items[i].prompt);
        }
      const PolicyUnderTest dense{"dense", "dense", {}};
      report_.dense_retrieval.push_back(
          retrieval_entry(dense, greedy(dense, prompts, ro.answer_tokens, stage, done, total), length, items));
      for (auto& point : report_.points) {
        const PolicyUnderTest dms = dms_policy(point);
        const GreedyRun d = greedy(dms, prompts, ro.answer_tokens, stage, done, total);
        point.retrieval.push_back(retrieval_entry(dms, d, length, items));
        const double target = d.compression.memory_ratio();
        for (const auto& name : o_.baselines) {
          double ratio = 0;
          const PolicyUnderTest b = baseline_policy(name, d.compression.seen(), target, ratio);
          point.retrieval.push_back(
              retrieval_entry(b, greedy(b, prompts, ro.answer_tokens, stage, done, total), length, items, ratio, target));
        }
      }
    }
  }

  const Model& model_;
  const std::vector<Document>& docs_;
  const EvalOptions& o_;
  EvalReport report_;
};

}  // namespace

EvalReport run_evaluation(const Model& model, const std::vector<Document>& docs, const EvalOptions& options) {
  check_options(model, options);
  if (docs.empty()) fail("evaluation", "no documents");
  return Evaluation(model, docs, options).run();
}

}  // namespace dms::eval
