// Shared pieces of the evaluation tests: the tiny checkpoints, text and references that
// tests/reference/make_eval_fixtures.py writes under $DMS_FIXTURES/eval.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "dms/eval/documents.h"
#include "dms/model/loader.h"

namespace dms::test {

// $DMS_FIXTURES/eval/<rel>; throws Error saying how to make the fixtures when it is missing.
std::string eval_fixture(const std::string& rel);

// The tiny Llama with decision heads ("tiny") or without ("tiny_base"), loaded once, in fp32.
const Model& eval_model(const std::string& name);

// doc.I of tiny.ref.safetensors (transformers' tokenization of text.txt) and logits.I.
eval::Document reference_document(int i);
at::Tensor reference_logits(int i);

}  // namespace dms::test
