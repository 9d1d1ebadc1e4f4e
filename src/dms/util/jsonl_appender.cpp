#include "dms/util/jsonl_appender.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "dms/util/error.h"

namespace dms {

namespace fs = std::filesystem;

JsonlTail repair_jsonl_tail(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return JsonlTail::Whole;
  std::string content;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot read");
    content.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad()) fail(path, "read error");
  }
  if (content.empty() || content.back() == '\n') return JsonlTail::Whole;
  const size_t newline = content.rfind('\n');
  const size_t start = newline == std::string::npos ? 0 : newline + 1;
  const nlohmann::json last = nlohmann::json::parse(content.begin() + static_cast<std::ptrdiff_t>(start), content.end(),
                                                    nullptr, /*allow_exceptions=*/false);
  if (last.is_object()) {
    std::ofstream out(path, std::ios::binary | std::ios::app);
    if (!(out << '\n') || !out.flush()) fail(path, "cannot add the newline of its last record");
    return JsonlTail::NewlineAdded;
  }
  fs::resize_file(path, start, ec);
  if (ec) fail(path, "cannot cut off its unfinished last line: " + ec.message());
  return JsonlTail::TornLineCut;
}

JsonlAppender::JsonlAppender(const std::string& path) : path_(path), repaired_(repair_jsonl_tail(path)) {
  file_ = std::fopen(path.c_str(), "ab");
  if (!file_) fail(path, std::string("cannot open for writing: ") + std::strerror(errno));
}

JsonlAppender::~JsonlAppender() { std::fclose(file_); }

void JsonlAppender::append(const nlohmann::json& record) {
  const std::string line = record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0)
    fail(path_, std::string("write failed: ") + std::strerror(errno));
}

}  // namespace dms
