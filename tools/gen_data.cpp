// dms gen-data: a training corpus sampled from the teacher (the model itself, keeping every key)
// on a prompt set, written as JSONL conversations that the training data reader takes as they are.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "common.h"
#include "commands.h"
#include "dms/train/data_documents.h"
#include "dms/train/data_jsonl.h"
#include "dms/util/jsonl_appender.h"

namespace dms::cli {
namespace {

namespace fs = std::filesystem;

struct Prompt {
  std::string id, category, system, text;
  std::vector<std::string> parts;  // the user's next turns, each asked once the last reply is in
};

std::string shipped_prompts_path() {
  const std::string path = shipped_file("data/prompts.jsonl");
  if (!fs::is_regular_file(path))
    throw UsageError("--prompts: the shipped prompt set is not next to this binary (looked for " + path +
                     "); pass --prompts FILE");
  return path;
}

std::string optional_string(const nlohmann::json& r, const char* field, const std::string& where) {
  auto it = r.find(field);
  if (it == r.end()) return "";
  if (!it->is_string()) fail(where, std::string("'") + field + "' must be a string");
  return it->get<std::string>();
}

// One prompt per line: {"id": "arith-001", "prompt": "...", "category": "...", "system": "...",
// "parts": ["...", ...]}.
std::vector<Prompt> read_prompts(const std::string& path) {
  std::vector<Prompt> prompts;
  std::set<std::string> ids;
  read_jsonl(path, [&](int64_t line, const nlohmann::json& r) {
    const std::string where = jsonl_where(path, line);
    if (!r.is_object()) fail(where, "expected a JSON object with 'id' and 'prompt'");
    Prompt p;
    p.id = optional_string(r, "id", where);
    p.text = optional_string(r, "prompt", where);
    if (p.id.empty()) fail(where, "'id' is missing or empty");
    if (p.text.empty()) fail(where, "'prompt' is missing or empty");
    if (!ids.insert(p.id).second) fail(where, "id '" + p.id + "' appears twice");
    p.category = optional_string(r, "category", where);
    p.system = optional_string(r, "system", where);
    if (auto it = r.find("parts"); it != r.end()) {
      if (!it->is_array()) fail(where, "'parts' must be a list of non-empty strings");
      for (const auto& part : *it) {
        if (!part.is_string() || part.get<std::string>().empty())
          fail(where, "'parts' must be a list of non-empty strings");
        p.parts.push_back(part.get<std::string>());
      }
    }
    prompts.push_back(std::move(p));
  });
  if (prompts.empty()) fail(path, "empty file: no prompts");
  return prompts;
}

using ReplyKey = std::pair<std::string, int64_t>;  // prompt id, sample

// Opens an output file for appending. Opening repairs the last line an interrupted run may have
// left (jsonl_appender.h): a torn reply is cut off and generated again, a whole one kept.
std::unique_ptr<JsonlAppender> open_output(const std::string& path) {
  auto out = std::make_unique<JsonlAppender>(path);
  if (out->repaired() == JsonlTail::TornLineCut)
    std::fprintf(stderr, "gen-data: %s: removed an unfinished last line (an interrupted run); it is generated again\n",
                 path.c_str());
  else if (out->repaired() == JsonlTail::NewlineAdded)
    std::fprintf(stderr, "gen-data: %s: the last reply lacked its newline (an interrupted run); kept\n", path.c_str());
  return out;
}

// The replies an earlier run already wrote to `path`.
void collect_done(const std::string& path, std::set<ReplyKey>& done) {
  read_jsonl(path, [&](int64_t line, const nlohmann::json& r) {
    const std::string where = jsonl_where(path, line);
    if (!r.is_object() || !r.contains("id") || !r["id"].is_string() || !r.contains("sample") ||
        !r["sample"].is_number_integer())
      fail(where, "not a gen-data record (needs a string 'id' and an integer 'sample'); is this the right output file?");
    done.insert({r["id"].get<std::string>(), r["sample"].get<int64_t>()});
  });
}

// A sampling seed per reply, from the run's seed, the prompt id and the sample, so a reply does not
// depend on which other prompts ran with it (or before an interruption).
uint64_t reply_seed(uint64_t base, const std::string& id, int64_t sample) {
  return ((base * 0x9e3779b97f4a7c15ull ^ split_hash(id)) + static_cast<uint64_t>(sample)) & ((1ull << 53) - 1);
}

}  // namespace

int run_gen_data(int argc, char** argv) {
  Args args("gen-data", "[options] --out FILE",
            "Writes a training corpus by sampling the model's own replies to a prompt set, with every key\n"
            "kept (the teacher of retrofitting). Each line of FILE is {\"id\", \"sample\", \"seed\", \"category\",\n"
            "\"messages\": [user prompt, assistant reply], \"stop_reason\", \"reply_tokens\"}. A prompt with\n"
            "\"parts\" (a list of the user's next turns) is a conversation: each part is asked once the last\n"
            "reply is in, with the whole conversation before it (long documents written in parts), and\n"
            "its record holds every turn. Replies already in FILE (and in the --heldout file) are kept and\n"
            "skipped, so an interrupted run resumes where it stopped (a reply it left half written, or a\n"
            "conversation left unfinished, is made again). Progress (replies, tokens/s, ETA) goes to\n"
            "standard error.");
  add_model_options(args);
  add_generation_options(args);
  add_cache_options(args);
  args.option("prompts", "FILE",
              "prompt set, JSONL lines {\"id\", \"prompt\", optional \"category\", \"system\", \"parts\"}",
              "data/prompts.jsonl, shipped with dms")
      .option("out", "FILE", "output JSONL; appended to when it exists")
      .option("samples", "N", "replies per prompt, each with its own seed", "1")
      .option("limit", "N", "use only the first N prompts", "all")
      .option("heldout-fraction", "F", "send the replies of this share of the prompts (by a stable hash of the id) to --heldout", "0")
      .option("heldout", "FILE", "output JSONL for the held-out prompts' replies")
      .option("parallel", "N", "sequences decoded together", "8")
      .option("step-tokens", "N", "most tokens in one forward (prefill chunk size)", "512");
  if (!args.parse(argc, argv)) return 0;
  if (!args.has("out")) throw UsageError("--out: the output file is required");
  if (args.has("policy") && args.str("policy") != "dense")
    throw UsageError("--policy: gen-data samples the teacher, which keeps every key; only dense is allowed");
  args.set("policy", "dense");
  const int64_t samples = args.at_least("samples", 1);
  const int64_t parallel = args.at_least("parallel", 1);
  const int64_t limit = args.has("limit") ? args.at_least("limit", 1) : INT64_MAX;
  const double heldout_fraction = args.number("heldout-fraction");
  if (!(heldout_fraction >= 0 && heldout_fraction < 1)) throw UsageError("--heldout-fraction: must be in [0, 1)");
  if ((heldout_fraction > 0) != args.has("heldout"))
    throw UsageError("--heldout-fraction and --heldout: give both (a share above 0 and its file) or neither");
  const std::string out_path = args.str("out");
  const std::string heldout_path = args.has("heldout") ? args.str("heldout") : "";
  if (!heldout_path.empty() && fs::weakly_canonical(heldout_path) == fs::weakly_canonical(out_path))
    throw UsageError("--heldout: must differ from --out");

  const std::string prompts_path = args.has("prompts") ? args.str("prompts") : shipped_prompts_path();
  std::vector<Prompt> prompts = read_prompts(prompts_path);
  if (limit < static_cast<int64_t>(prompts.size())) prompts.resize(static_cast<size_t>(limit));
  const std::unique_ptr<JsonlAppender> out = open_output(out_path);
  const std::unique_ptr<JsonlAppender> heldout = heldout_path.empty() ? nullptr : open_output(heldout_path);
  std::set<ReplyKey> done;
  collect_done(out_path, done);
  if (heldout) collect_done(heldout_path, done);

  Model model = load_model_from_args(args);
  GenerationParams params = generation_params_from_args(args, model);
  for (const auto& s : model.chat_template.stop_strings()) params.stop_strings.push_back(s);

  struct Job {
    const Prompt* prompt;
    int64_t sample;
    uint64_t seed;
    std::vector<ChatMessage> messages;  // the conversation so far
    std::vector<int32_t> first_turn;    // the first prompt's tokens, until it is submitted
    size_t parts_asked = 0;
    int64_t reply_tokens = 0;           // over all its replies
  };
  // The rendered template carries its own BOS text where the family has one.
  const auto encode = [&](const std::vector<ChatMessage>& messages) {
    return model.tokenizer->encode(model.chat_template.render(messages, true), false);
  };
  std::vector<Job> jobs;
  int64_t longest = 0;  // the longest conversation's tokens, at most
  bool conversations = false;
  int64_t turns = 0;  // replies to generate, a conversation's every turn counted
  const int64_t context = model.info.config.max_position;
  for (const Prompt& p : prompts) {
    std::vector<ChatMessage> messages;
    if (!p.system.empty()) messages.push_back({"system", p.system});
    messages.push_back({"user", p.text});
    std::vector<int32_t> first_turn = encode(messages);
    if (static_cast<int64_t>(first_turn.size()) > context)  // said now, not when its turn comes
      fail(prompts_path + ": prompt '" + p.id + "'", std::to_string(first_turn.size()) +
                                                         " tokens do not fit the model's context length of " +
                                                         std::to_string(context));
    int64_t tokens = static_cast<int64_t>(first_turn.size()) + params.max_tokens;
    for (const std::string& part : p.parts)  // a turn's template adds a few tokens to its text's
      tokens += static_cast<int64_t>(model.tokenizer->encode(part, false).size()) + 16 + params.max_tokens;
    if (!p.parts.empty() && tokens > context)  // a later turn would not fit: said now, not after the turns before it
      fail(prompts_path + ": prompt '" + p.id + "'",
           "its " + std::to_string(1 + p.parts.size()) + " turns with up to " + std::to_string(params.max_tokens) +
               " tokens per reply may reach about " + std::to_string(tokens) +
               " tokens, more than the model's context length of " + std::to_string(context) +
               "; lower --max-tokens or shorten its parts");
    conversations = conversations || !p.parts.empty();
    for (int64_t s = 0; s < samples; ++s) {
      if (done.count({p.id, s})) continue;
      longest = std::max(longest, tokens);
      jobs.push_back({&p, s, reply_seed(params.sampling.seed, p.id, s), messages, first_turn});
      turns += 1 + static_cast<int64_t>(p.parts.size());
    }
  }
  const int64_t total = static_cast<int64_t>(prompts.size()) * samples;
  const int64_t already = total - static_cast<int64_t>(jobs.size());
  std::fprintf(stderr, "gen-data: %lld prompts x %lld samples from %s | %lld already written, %zu to generate\n",
               static_cast<long long>(prompts.size()), static_cast<long long>(samples), prompts_path.c_str(),
               static_cast<long long>(already), jobs.size());
  if (jobs.empty()) return 0;

  const int64_t running = std::min<int64_t>(parallel, static_cast<int64_t>(jobs.size()));
  auto cache = make_cache_from_args(args, model, running, longest);
  EngineOptions eo;
  eo.max_running = running;
  eo.max_step_tokens = args.at_least("step-tokens", 1);
  eo.prefix_cache = conversations;  // a conversation's next turn prefills only its new tokens
  Engine engine(model, *cache, eo);
  std::vector<std::pair<int64_t, Job*>> pending;  // request id, job
  // The job's next reply; the k-th of a conversation samples with its own seed.
  const auto submit = [&](Job& job) {
    GenerationParams p = params;
    p.sampling.seed = (job.seed + job.parts_asked) & ((1ull << 53) - 1);
    try {
      pending.push_back({engine.submit(job.first_turn.empty() ? encode(job.messages) : std::move(job.first_turn), p),
                         &job});
      job.first_turn = {};
    } catch (const Error& e) {
      fail(prompts_path + ": prompt '" + job.prompt->id + "'", e.what());
    }
  };
  // `running` jobs at a time, the next one as one finishes: a conversation's next turn then runs
  // before later jobs start, so conversations finish (and are written) one after another.
  size_t next_job = 0;
  for (; next_job < static_cast<size_t>(running); ++next_job) submit(jobs[next_job]);

  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto last_report = start - std::chrono::seconds(10);
  const bool tty = isatty(STDERR_FILENO);
  int64_t finished = 0, reply_tokens = 0, heldout_replies = 0, turns_done = 0;
  while (!engine.idle()) {
    engine.step();
    bool replied = false;  // a reply came in (a record, or a turn of a conversation)
    for (size_t i = 0; i < pending.size();) {
      const GenerationResult& r = engine.result(pending[i].first);
      if (!r.finished) {
        ++i;
        continue;
      }
      Job& job = *pending[i].second;
      job.messages.push_back({"assistant", r.text});
      job.reply_tokens += static_cast<int64_t>(r.tokens.size());
      reply_tokens += static_cast<int64_t>(r.tokens.size());
      const int64_t request = pending[i].first;
      pending[i] = pending.back();
      pending.pop_back();
      replied = true;
      ++turns_done;
      if (job.parts_asked < job.prompt->parts.size()) {  // the conversation goes on
        job.messages.push_back({"user", job.prompt->parts[job.parts_asked++]});
        engine.release(request);
        submit(job);
        continue;
      }
      nlohmann::json messages = nlohmann::json::array();
      for (const ChatMessage& m : job.messages) messages.push_back({{"role", m.role}, {"content", m.content}});
      nlohmann::json record = {{"id", job.prompt->id}, {"sample", job.sample}, {"seed", job.seed}};
      if (!job.prompt->category.empty()) record["category"] = job.prompt->category;
      record["messages"] = std::move(messages);
      record["stop_reason"] = r.stop_reason;
      record["reply_tokens"] = job.reply_tokens;
      engine.release(request);
      const bool held = heldout && in_heldout_split(job.prompt->id, heldout_fraction);
      (held ? heldout : out)->append(record);
      heldout_replies += held;
      ++finished;
      if (next_job < jobs.size()) submit(jobs[next_job++]);
    }
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const bool last = engine.idle();
    if (!(replied && now - last_report >= std::chrono::seconds(1)) && !last) continue;
    last_report = now;
    const double eta = elapsed / static_cast<double>(std::max<int64_t>(turns_done, 1)) *
                       static_cast<double>(turns - turns_done);
    const std::string turns_text = conversations ? " (turns " + std::to_string(turns_done) + "/" +
                                                       std::to_string(turns) + ")" : "";
    std::fprintf(stderr, "%sgen-data: %lld/%lld replies%s | %lld tokens generated, %.1f tok/s | elapsed %s | ETA %s%s",
                 tty ? "\r" : "", static_cast<long long>(already + finished), static_cast<long long>(total),
                 turns_text.c_str(), static_cast<long long>(reply_tokens), elapsed > 0 ? reply_tokens / elapsed : 0.0,
                 duration_text(elapsed).c_str(), duration_text(eta).c_str(), tty && !last ? "  " : "\n");
    std::fflush(stderr);
  }
  std::fprintf(stderr, "gen-data: wrote %lld replies to %s", static_cast<long long>(finished - heldout_replies),
               out_path.c_str());
  if (heldout) std::fprintf(stderr, " and %lld to %s", static_cast<long long>(heldout_replies), heldout_path.c_str());
  std::fprintf(stderr, " | seed %llu\n", static_cast<unsigned long long>(params.sampling.seed));
  return 0;
}

}  // namespace dms::cli
