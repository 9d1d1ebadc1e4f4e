#include "test_eval_fixtures.h"

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "dms/format/safetensors.h"
#include "dms/util/error.h"

namespace dms::test {

std::string eval_fixture(const std::string& rel) {
  const char* root = std::getenv("DMS_FIXTURES");
  const std::string how = "; generate them with tests/reference/make_eval_fixtures.py <dir> and export "
                          "DMS_FIXTURES=<dir> (scripts/test does both)";
  if (!root || !*root) fail("DMS_FIXTURES", "not set" + how);
  const auto path = std::filesystem::path(root) / "eval" / rel;
  if (!std::filesystem::exists(path)) fail(path.string(), "eval fixture missing" + how);
  return path.string();
}

const Model& eval_model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Model>> loaded;
  auto& m = loaded[name];
  if (!m) m = std::make_unique<Model>(load_model(eval_fixture(name), at::kFloat));
  return *m;
}

namespace {

at::Tensor reference_tensor(const std::string& name) {
  static const std::shared_ptr<SafetensorsFile> file = SafetensorsFile::open(eval_fixture("tiny.ref.safetensors"));
  auto it = file->tensors().find(name);
  if (it == file->tensors().end()) fail(file->path(), "reference tensor '" + name + "' missing");
  const StTensor& t = it->second;
  const at::ScalarType type = t.dtype == StDtype::I64 ? at::kLong : at::kFloat;
  return at::from_blob(const_cast<uint8_t*>(t.data), t.shape, at::TensorOptions().dtype(type)).clone();
}

}  // namespace

eval::Document reference_document(int i) {
  const at::Tensor t = reference_tensor("doc." + std::to_string(i)).contiguous();
  return eval::Document(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

at::Tensor reference_logits(int i) { return reference_tensor("logits." + std::to_string(i)); }

}  // namespace dms::test
