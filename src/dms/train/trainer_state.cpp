// Trainer::state / restore and the trainer-state file.
#include <ATen/core/grad_mode.h>

#include <cstring>

#include "dms/format/safetensors.h"
#include "dms/train/trainer.h"
#include "dms/util/error.h"

namespace dms {
namespace {

constexpr const char* kFormat = "dms-trainer-state";

StTensorOut to_output(const std::string& name, const at::Tensor& t) {
  StDtype dtype;
  switch (t.scalar_type()) {
    case at::kDouble: dtype = StDtype::F64; break;
    case at::kFloat: dtype = StDtype::F32; break;
    case at::kBFloat16: dtype = StDtype::BF16; break;
    case at::kHalf: dtype = StDtype::F16; break;
    default: fail("trainer state", "tensor '" + name + "' is not a float tensor");
  }
  const at::Tensor c = t.detach().cpu().contiguous();
  StTensorOut out{name, dtype, c.sizes().vec(), std::vector<uint8_t>(c.nbytes())};
  std::memcpy(out.bytes.data(), c.data_ptr(), c.nbytes());
  return out;
}

at::Tensor from_file(const StTensor& t) {
  at::ScalarType type;
  switch (t.dtype) {
    case StDtype::F64: type = at::kDouble; break;
    case StDtype::F32: type = at::kFloat; break;
    case StDtype::BF16: type = at::kBFloat16; break;
    case StDtype::F16: type = at::kHalf; break;
    default: fail(t.file, "tensor '" + t.name + "' has dtype " + st_dtype_name(t.dtype) + ", expected a float type");
  }
  at::Tensor out = at::empty(t.shape, type);
  std::memcpy(out.data_ptr(), t.data, t.nbytes);
  return out;
}

const at::Tensor& find(const TrainerState& s, const std::string& key, const at::Tensor& like) {
  auto it = s.tensors.find(key);
  if (it == s.tensors.end()) fail(s.source, "has no tensor '" + key + "' (a state of a different training run?)");
  if (!it->second.sizes().equals(like.sizes())) fail(s.source, "tensor '" + key + "' has the wrong shape");
  return it->second;
}

int64_t meta_int(const TrainerState& s, const char* key) {
  if (!s.meta.contains(key) || !s.meta[key].is_number_integer() || s.meta[key].get<int64_t>() < 0)
    fail(s.source, std::string("metadata field '") + key + "' must be a non-negative integer");
  return s.meta[key].get<int64_t>();
}

}  // namespace

TrainerState Trainer::state() const {
  if (micro_ != 0) fail("trainer", "the state can only be taken between steps");
  TrainerState s;
  for (size_t i = 0; i < names_.size(); ++i) {
    s.tensors["weight/" + names_[i]] = masters_[i].detach().clone();
    s.tensors["exp_avg/" + names_[i]] = optimizer_->exp_avg()[i].clone();
    s.tensors["exp_avg_sq/" + names_[i]] = optimizer_->exp_avg_sq()[i].clone();
  }
  const auto& o = options_;
  s.meta = {
      {"step", step_},
      {"seed", seed_},
      {"adamw_steps", optimizer_->steps()},
      {"target", train_target_name(o.target)},
      {"dms", config_.dms.to_json()},
      {"tau", o.tau},
      {"schedule", {{"start", o.schedule.start}, {"end", o.schedule.end}, {"ramp_steps", o.schedule.ramp_steps}}},
      {"adamw", {{"lr", o.adamw.lr}, {"beta1", o.adamw.beta1}, {"beta2", o.adamw.beta2}, {"eps", o.adamw.eps},
                 {"weight_decay", o.adamw.weight_decay}}},
      {"max_grad_norm", o.max_grad_norm},
      {"accumulation", o.accumulation},
  };
  return s;
}

void Trainer::restore(const TrainerState& s) {
  if (micro_ != 0) fail("trainer", "a state can only be restored between steps");
  if (!s.meta.contains("target") || s.meta["target"] != train_target_name(options_.target))
    fail(s.source, "is a state of training target '" + s.meta.value("target", std::string("?")) + "', not '" +
                       train_target_name(options_.target) + "'");
  if (!s.meta.contains("seed") || !s.meta["seed"].is_number_unsigned())
    fail(s.source, "metadata field 'seed' must be a non-negative integer");
  const int64_t step = meta_int(s, "step"), adamw_steps = meta_int(s, "adamw_steps");
  size_t weights_in_state = 0;
  for (const auto& [key, t] : s.tensors) weights_in_state += key.starts_with("weight/");
  if (weights_in_state != names_.size())
    fail(s.source, "holds " + std::to_string(weights_in_state) + " trained tensors, this trainer trains " +
                       std::to_string(names_.size()));
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  for (size_t i = 0; i < names_.size(); ++i) {
    const at::Tensor& w = find(s, "weight/" + names_[i], masters_[i]);
    exp_avg.push_back(find(s, "exp_avg/" + names_[i], masters_[i]));
    exp_avg_sq.push_back(find(s, "exp_avg_sq/" + names_[i], masters_[i]));
    at::NoGradGuard no_grad;
    masters_[i].copy_(w);
  }
  optimizer_->restore(adamw_steps, exp_avg, exp_avg_sq);
  step_ = step;
  seed_ = s.meta["seed"].get<uint64_t>();
}

void save_trainer_state(const std::string& path, const TrainerState& state) {
  std::vector<StTensorOut> out;
  for (const auto& [name, t] : state.tensors) out.push_back(to_output(name, t));
  save_safetensors(path, out, {{"format", kFormat}, {"state", state.meta.dump()}});
}

TrainerState load_trainer_state(const std::string& path) {
  const auto file = SafetensorsFile::open(path);
  auto format = file->metadata().find("format");
  if (format == file->metadata().end() || format->second != kFormat) fail(path, "is not a DMS trainer state");
  auto meta = file->metadata().find("state");
  if (meta == file->metadata().end()) fail(path, "metadata has no 'state'");
  TrainerState s;
  s.source = path;
  try {
    s.meta = nlohmann::json::parse(meta->second);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("metadata 'state' is not valid JSON: ") + e.what());
  }
  if (!s.meta.is_object()) fail(path, "metadata 'state' is not a JSON object");
  for (const auto& [name, t] : file->tensors()) s.tensors[name] = from_file(t);
  return s;
}

}  // namespace dms
