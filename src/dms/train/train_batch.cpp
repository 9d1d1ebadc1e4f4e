#include "dms/train/train_batch.h"

#include <set>

#include "dms/util/error.h"

namespace dms {
namespace {

void check_rows(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t rows, const std::string& where) {
  if (!t.defined()) fail(where, std::string(name) + " is missing");
  if (t.dim() != 1 || t.size(0) != rows)
    fail(where, std::string(name) + " must have one entry per row (" + std::to_string(rows) + ")");
  if (t.scalar_type() != dtype) fail(where, std::string(name) + " has the wrong dtype");
}

}  // namespace

int64_t TrainBatch::counted_rows() const { return counted.sum().item<int64_t>(); }

void TrainBatch::validate(int64_t vocab_size, const std::string& where) const {
  if (batch < 1 || seq_len < 1) fail(where, "a batch needs at least one sequence of at least one token");
  check_rows(tokens, "tokens", at::kLong, rows(), where);
  check_rows(positions, "positions", at::kLong, rows(), where);
  check_rows(documents, "documents", at::kLong, rows(), where);
  check_rows(counted, "counted", at::kBool, rows(), where);
  const auto tok = tokens.cpu(), doc = documents.cpu(), pos = positions.cpu();
  const int64_t* t = tok.data_ptr<int64_t>();
  const int64_t* d = doc.data_ptr<int64_t>();
  const int64_t* p = pos.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    std::set<int64_t> finished;
    for (int64_t i = 0; i < seq_len; ++i) {
      const int64_t r = b * seq_len + i;
      if (t[r] < 0 || t[r] >= vocab_size)
        fail(where, "token " + std::to_string(t[r]) + " at sequence " + std::to_string(b) + " row " +
                        std::to_string(i) + " is outside the vocabulary (" + std::to_string(vocab_size) + ")");
      const bool starts = i == 0 || d[r] != d[r - 1];
      if (starts && !finished.insert(d[r]).second)
        fail(where, "document " + std::to_string(d[r]) + " of sequence " + std::to_string(b) +
                        " is split into more than one run");
      if (p[r] != (starts ? 0 : p[r - 1] + 1))
        fail(where, "positions must count 0, 1, 2, ... from each document's first row (sequence " +
                        std::to_string(b) + " row " + std::to_string(i) + ")");
    }
  }
  if (counted_rows() == 0) fail(where, "no row is counted (all padding)");
}

TrainBatch TrainBatch::to(const at::Device& device) const {
  TrainBatch out = *this;
  for (at::Tensor* t : {&out.tokens, &out.positions, &out.documents, &out.counted})
    if (t->defined()) *t = t->to(device);
  return out;
}

TrainBatch make_train_batch(const at::Tensor& tokens, const at::Tensor& documents, const at::Tensor& counted) {
  if (tokens.dim() != 2 || !documents.sizes().equals(tokens.sizes()) || !counted.sizes().equals(tokens.sizes()))
    fail("training batch", "tokens, documents and counted must all be [B, T]");
  TrainBatch out;
  out.batch = tokens.size(0);
  out.seq_len = tokens.size(1);
  out.tokens = tokens.reshape({-1}).to(at::kLong).contiguous();
  out.documents = documents.reshape({-1}).to(at::kLong).contiguous();
  out.counted = counted.reshape({-1}).to(at::kBool).contiguous();
  const auto doc = out.documents.cpu();
  const int64_t* d = doc.data_ptr<int64_t>();
  auto pos = at::empty({out.rows()}, at::kLong);
  int64_t* p = pos.data_ptr<int64_t>();
  for (int64_t b = 0; b < out.batch; ++b)
    for (int64_t i = 0; i < out.seq_len; ++i) {
      const int64_t r = b * out.seq_len + i;
      p[r] = (i == 0 || d[r] != d[r - 1]) ? 0 : p[r - 1] + 1;
    }
  out.positions = pos.to(tokens.device());
  return out;
}

}  // namespace dms
