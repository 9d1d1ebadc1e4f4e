// The JSONL appender's one recovery rule (a torn last line is cut, a whole record missing only
// its newline is kept, nothing before the last line is touched) and a retrofit run's log kept up
// to the checkpoint it resumes from.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "dms/train/run_log.h"
#include "dms/util/jsonl_appender.h"
#include "test_train_data_util.h"

namespace dms::test {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

const std::string kFirst = R"({"id":"a","sample":0})" "\n";
const std::string kLast = R"({"id":"b","reply":"two words","n":[1,2.5]})";

TEST(JsonlAppender, AppendsOneFlushedLinePerRecord) {
  TempDir dir;
  const std::string path = dir.path("out.jsonl");
  JsonlAppender out(path);
  EXPECT_EQ(out.repaired(), JsonlTail::Whole);
  out.append({{"id", "a"}, {"sample", 0}});
  EXPECT_EQ(read_all(path), kFirst) << "a record is on disk as soon as append returns";
  out.append({{"text", "bad \xff byte"}});
  EXPECT_EQ(read_all(path), kFirst + "{\"text\":\"bad \xEF\xBF\xBD byte\"}\n") << "invalid UTF-8 becomes U+FFFD";
}

TEST(JsonlAppender, CutsEveryTornPrefixOfTheLastRecordAndKeepsTheWholeOne) {
  TempDir dir;
  const std::string path = dir.path("out.jsonl");
  for (size_t n = 1; n <= kLast.size(); ++n) {
    dir.write("out.jsonl", kFirst + kLast.substr(0, n));
    const bool whole = n == kLast.size();
    JsonlAppender out(path);
    EXPECT_EQ(out.repaired(), whole ? JsonlTail::NewlineAdded : JsonlTail::TornLineCut) << "prefix of " << n;
    out.append({{"id", "c"}});
    EXPECT_EQ(read_all(path), kFirst + (whole ? kLast + "\n" : "") + "{\"id\":\"c\"}\n") << "prefix of " << n;
  }
}

TEST(JsonlAppender, ALastLineThatIsNotAnObjectIsTorn) {
  TempDir dir;
  // "12" parses, but as a number: the rest of "123" or of a record may have been lost.
  for (const std::string tail : {"12", "[1,2]", "\"text\"", "  "}) {
    const std::string path = dir.write("out.jsonl", kFirst + tail);
    EXPECT_EQ(repair_jsonl_tail(path), JsonlTail::TornLineCut) << tail;
    EXPECT_EQ(read_all(path), kFirst) << tail;
  }
  const std::string single = dir.write("single.jsonl", "{\"a\":");
  EXPECT_EQ(repair_jsonl_tail(single), JsonlTail::TornLineCut);
  EXPECT_EQ(read_all(single), "");
}

TEST(JsonlAppender, LeavesWholeFilesAndEarlierLinesAlone) {
  TempDir dir;
  EXPECT_EQ(repair_jsonl_tail(dir.path("absent.jsonl")), JsonlTail::Whole);
  EXPECT_FALSE(std::filesystem::exists(dir.path("absent.jsonl")));
  // A malformed line before the last was not left by an interrupted append: not the appender's to judge.
  const std::string content = "not json\n" + kFirst;
  const std::string path = dir.write("out.jsonl", content);
  EXPECT_EQ(repair_jsonl_tail(path), JsonlTail::Whole);
  EXPECT_EQ(read_all(path), content);
  const std::string empty = dir.write("empty.jsonl", "");
  EXPECT_EQ(JsonlAppender(empty).repaired(), JsonlTail::Whole);
  EXPECT_EQ(read_all(empty), "");
}

TEST(JsonlAppender, ErrorsNameTheFile) {
  TempDir dir;
  expect_error([&] { JsonlAppender out(dir.path("no/such/dir/out.jsonl")); }, {"no/such/dir/out.jsonl", "cannot open"});
}

std::string record(const std::string& type, int64_t step) {
  return nlohmann::json({{"type", type}, {"step", step}}).dump() + "\n";
}

TEST(RunLog, AResumedLogKeepsWhatHappenedUpToTheCheckpoint) {
  TempDir dir;
  const std::string path = dir.path("log.jsonl");
  // Steps 1-4 with an evaluation at 2 and 4; the run was checkpointed at 2 and killed while
  // writing step 5.
  const std::string kept = record("step", 1) + record("step", 2) + record("eval", 2);
  dir.write("log.jsonl", kept + record("step", 3) + record("step", 4) + record("eval", 4) + "{\"type\":\"st");
  {
    RunLog log = RunLog::resumed(path, 2);
    EXPECT_EQ(read_all(path), kept);
    log.write({{"type", "step"}, {"step", 3}});
  }
  EXPECT_EQ(read_all(path), kept + record("step", 3));

  // Nothing to drop when the checkpoint is the last step written.
  RunLog::resumed(path, 3);
  EXPECT_EQ(read_all(path), kept + record("step", 3));
  // No log yet (it was removed): an empty one.
  std::filesystem::remove(path);
  RunLog::resumed(path, 3).write({{"type", "step"}, {"step", 4}});
  EXPECT_EQ(read_all(path), record("step", 4));
}

TEST(RunLog, AFreshLogReplacesTheOld) {
  TempDir dir;
  const std::string path = dir.write("log.jsonl", record("step", 1) + record("step", 2));
  RunLog::fresh(path).write({{"type", "step"}, {"step", 1}});
  EXPECT_EQ(read_all(path), record("step", 1));
}

TEST(RunLog, AMalformedLineBeforeTheLastIsAnErrorNamingIt) {
  TempDir dir;
  const std::string path = dir.write("log.jsonl", record("step", 1) + "oops\n" + record("step", 2));
  expect_error([&] { RunLog::resumed(path, 2); }, {path + ":2", "malformed JSON"});
  EXPECT_EQ(read_all(path), record("step", 1) + "oops\n" + record("step", 2)) << "the log is left as it was";
}

}  // namespace
}  // namespace dms::test
