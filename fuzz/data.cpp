// Training and evaluation data: a JSONL file (text and chat-message records) read into training
// documents with the default model's tokenizer and chat template, and the same bytes as a
// plain-text document; then both read by dms eval's loader (--field text, cut to 64 tokens), as a
// dms solve task file, and as a model's reply to a number and to a choice problem.
#include <algorithm>
#include <sstream>

#include "dms/eval/documents.h"
#include "dms/eval/tasks.h"
#include "dms/train/data_documents.h"
#include "fuzz_common.h"

using namespace dms;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& d = fuzz::default_tokenizer();
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_ok_or_error([&] { documents_from_text(text, "data.jsonl", *d.tokenizer, *d.chat_template); });
  fuzz::expect_ok_or_error([&] { documents_from_text(text, "data.txt", *d.tokenizer, *d.chat_template); });
  for (const char* name : {"eval.jsonl", "eval.txt"}) {
    eval::DocumentOptions o;
    o.context = 64;
    o.max_documents = 8;
    o.add_bos = true;
    o.chat_template = d.chat_template.get();
    std::istringstream in(text);
    fuzz::expect_ok_or_error([&] { eval::load_documents(in, name, *d.tokenizer, o); });
  }
  std::istringstream tasks(text);
  fuzz::expect_ok_or_error([&] { eval::load_tasks(tasks, "tasks.jsonl"); });
  const eval::TaskProblem number{"n", "f", "", 1, "q", "12", {}}, choice{"c", "f", "", 1, "q", "Ben", {"Anna", "Ben", "B"}};
  for (const auto* p : {&number, &choice}) {
    const std::string answer = eval::extract_answer(text, *p);
    if (!p->choices.empty() && !answer.empty() &&
        std::find(p->choices.begin(), p->choices.end(), answer) == p->choices.end())
      __builtin_trap();  // a choice answer is always one of the choices
  }
  return 0;
}
