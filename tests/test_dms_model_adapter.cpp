// Mode B adapters as separate files: written from a checkpoint's built-in decision heads and
// applied to its base they give the same model; a GGUF base takes one as its safetensors twin
// does; an adapter that does not fit is refused with an error naming the file and what is wrong.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dms/format/gguf.h"
#include "dms/model/dms_adapter.h"
#include "dms/util/error.h"
#include "test_dms_model_fixtures.h"
#include "test_model_fixtures.h"

namespace dms::test {
namespace {

using nlohmann::json;

DmsAdapter built_in_adapter(const Transformer& model) {
  DmsAdapter a;
  a.config = model.config().dms;
  for (const auto& l : model.weights().layers) a.layers.push_back(l.decision);
  return a;
}

class AdapterModel : public ::testing::TestWithParam<std::string> {};

// Same weights, same forward. Only the memory alignment of the weights differs (they are mapped
// from different files), which changes the matmul kernels' summation order: measured worst case
// 7e-7 of the largest logit over the 219 steps.
constexpr double kSameModelRel = 1e-5;

TEST_P(AdapterModel, AdapterOnItsBaseEqualsTheCheckpoint) {
  const Transformer checkpoint = load_dms_model(dms_fixture(GetParam()));
  ScratchDir scratch;
  const std::string path = scratch / "adapter.safetensors";
  save_dms_adapter(path, checkpoint.config(), built_in_adapter(checkpoint));

  DmsLoadOptions options;
  options.adapter_path = path;
  const Transformer adapted = load_dms_model(dms_fixture(GetParam() + "_base"), options);
  const DmsConfig &a = adapted.config().dms, &c = checkpoint.config().dms;
  EXPECT_EQ(a.mode, DmsMode::Adapter);
  EXPECT_EQ(a.alpha_scale, c.alpha_scale);
  EXPECT_EQ(a.alpha_offset, c.alpha_offset);
  EXPECT_EQ(a.window, c.window);
  EXPECT_EQ(a.per_layer, c.per_layer);
  EXPECT_EQ(a.target_cr, c.target_cr);
  EXPECT_EQ(parameter_count(adapted.weights()), parameter_count(checkpoint.weights()));

  const DmsReference r(GetParam());
  const std::vector<int64_t> chunks = {static_cast<int64_t>(r.ids("prompt").size()), 1};
  PagedSequence cache_a(adapted), cache_c(checkpoint);
  const at::Tensor ours = run_chunks(adapted, cache_a, r.sequence(), chunks);
  expect_logits_near(ours, run_chunks(checkpoint, cache_c, r.sequence(), chunks), kSameModelRel,
                     GetParam() + " adapter applied to its base vs built-in decision heads");
  expect_logits_near(ours, r.tensor("logits"), 1e-4, GetParam() + " adapter applied to its base");
}

INSTANTIATE_TEST_SUITE_P(Golden, AdapterModel, ::testing::ValuesIn(kAdapterModels),
                         [](const auto& info) { return info.param; });

TEST(DmsAdapter, KeepsBf16TensorsAndLoadsThemInTheComputeDtype) {
  const Transformer checkpoint = load_dms_model(dms_fixture("mode_b_layer"));
  DmsAdapter a = built_in_adapter(checkpoint);
  for (auto& l : a.layers) {
    l.norm = l.norm.to(at::kBFloat16);
    l.proj = l.proj.to(at::kBFloat16);
    l.bias = l.bias.to(at::kBFloat16);
  }
  ScratchDir scratch;
  const std::string path = scratch / "adapter.safetensors";
  save_dms_adapter(path, checkpoint.config(), a);
  const auto file = SafetensorsFile::open(path);
  for (const auto& [name, t] : file->tensors()) EXPECT_EQ(t.dtype, StDtype::BF16) << name;
  const DmsAdapter back = load_dms_adapter(path, checkpoint.config(), at::kFloat);
  ASSERT_EQ(back.layers.size(), a.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].proj.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(back.layers[i].proj, a.layers[i].proj.to(at::kFloat)));
    EXPECT_TRUE(at::equal(back.layers[i].bias, a.layers[i].bias.to(at::kFloat)));
  }
}

// An adapter written for mode_b_head (GQA 4/2, no attention biases), tampered with.
class BadAdapter : public ::testing::Test {
 protected:
  void SetUp() override {
    const Transformer model = load_dms_model(dms_fixture("mode_b_head"));
    config_ = model.config();
    save_dms_adapter(good_path(), config_, built_in_adapter(model));
    auto good = SafetensorsFile::open(good_path());
    metadata_ = good->metadata();
    for (const auto& [name, t] : good->tensors())
      tensors_.push_back({name, t.dtype, t.shape, std::vector<uint8_t>(t.data, t.data + t.nbytes)});
  }
  std::string good_path() const { return scratch_ / "good.safetensors"; }
  // Writes the tampered adapter and returns the error loading it onto mode_b_head throws.
  std::string load_error() {
    const std::string path = scratch_ / "bad.safetensors";
    save_safetensors(path, tensors_, metadata_);
    const std::string msg = error_of([&] { load_dms_adapter(path, config_, at::kFloat); });
    EXPECT_NE(msg.find(path), std::string::npos) << "the error does not name the adapter file: " << msg;
    return msg;
  }
  StTensorOut& tensor(const std::string& name) {
    for (auto& t : tensors_)
      if (t.name == name) return t;
    throw std::runtime_error("no tensor " + name);
  }

  ScratchDir scratch_;
  ModelConfig config_;
  std::vector<StTensorOut> tensors_;
  std::map<std::string, std::string> metadata_;
};

#define EXPECT_MENTIONS(msg, text) EXPECT_NE((msg).find(text), std::string::npos) << (msg)

TEST_F(BadAdapter, TheUntamperedOneLoads) { EXPECT_NO_THROW(load_dms_adapter(good_path(), config_, at::kFloat)); }

TEST_F(BadAdapter, ForAnotherArchitecture) {
  const std::string adapter = good_path();
  DmsLoadOptions options;
  options.adapter_path = adapter;
  // mode_a: 8 query heads instead of 4.
  std::string msg = error_of([&] { load_dms_model(dms_fixture("mode_a"), options); });
  EXPECT_MENTIONS(msg, adapter);
  EXPECT_MENTIONS(msg, "num_attention_heads");
  // mode_b_layer_base: the same shapes, but its attention has biases.
  msg = error_of([&] { load_dms_model(dms_fixture("mode_b_layer_base"), options); });
  EXPECT_MENTIONS(msg, adapter);
  EXPECT_MENTIONS(msg, "attention_bias");
  // The tiny Llama of the model tests: another architecture altogether.
  msg = error_of([&] { load_dms_model(fixture_path("llama_gqa"), options); });
  EXPECT_MENTIONS(msg, adapter);
  EXPECT_MENTIONS(msg, "architecture");
}

TEST_F(BadAdapter, WrongShape) {
  auto& t = tensor("model.layers.1.self_attn.dms_proj_alpha.weight");
  t.shape = {t.shape[1], t.shape[0]};
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "model.layers.1.self_attn.dms_proj_alpha.weight");
  EXPECT_MENTIONS(msg, "shape");
}

TEST_F(BadAdapter, MissingTensor) {
  std::erase_if(tensors_, [](const StTensorOut& t) { return t.name == "model.layers.2.self_attn.dms_proj_alpha_norm.weight"; });
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "missing tensor 'model.layers.2.self_attn.dms_proj_alpha_norm.weight'");
}

TEST_F(BadAdapter, UnexpectedTensor) {
  // A bias, which a base without attention biases has no place for.
  tensors_.push_back({"model.layers.0.self_attn.dms_proj_alpha.bias", StDtype::F32, {2}, std::vector<uint8_t>(8)});
  EXPECT_MENTIONS(load_error(), "unexpected tensor 'model.layers.0.self_attn.dms_proj_alpha.bias'");
}

TEST_F(BadAdapter, WrongDtype) {
  auto& t = tensor("model.layers.0.self_attn.dms_proj_alpha.weight");
  t.dtype = StDtype::I32;
  const std::string msg = load_error();
  EXPECT_MENTIONS(msg, "model.layers.0.self_attn.dms_proj_alpha.weight");
  EXPECT_MENTIONS(msg, "I32");
}

TEST_F(BadAdapter, NotAnAdapter) {
  metadata_.clear();
  EXPECT_MENTIONS(load_error(), "'format'");
}

TEST_F(BadAdapter, UnknownVersion) {
  metadata_["version"] = "7";
  EXPECT_MENTIONS(load_error(), "version");
}

TEST_F(BadAdapter, BadDmsConfig) {
  json cfg = json::parse(metadata_["dms_config"]);
  cfg["dms_window_size"] = 0;
  metadata_["dms_config"] = cfg.dump();
  EXPECT_MENTIONS(load_error(), "dms_window_size");
  cfg["dms_window_size"] = 16;
  cfg["dms_separate_alpha"] = false;
  metadata_["dms_config"] = cfg.dump();
  EXPECT_MENTIONS(load_error(), "dms_separate_alpha");
  metadata_["dms_config"] = "{not json";
  EXPECT_MENTIONS(load_error(), "dms_config");
}

TEST_F(BadAdapter, BaseFactMissing) {
  json base = json::parse(metadata_["base_model"]);
  base.erase("head_dim");
  metadata_["base_model"] = base.dump();
  EXPECT_MENTIONS(load_error(), "head_dim");
}

// A Llama base read from GGUF takes an adapter as its safetensors twin does: random decision
// heads that flag about half the keys at window 8, the same logits through both loaders (the
// tolerance of test_model_gguf_tiny.cpp), and different from no eviction at all.
TEST(DmsAdapter, AppliesToAGgufBaseAsToItsSafetensorsTwin) {
  const std::string hf_dir = fixture_path("llama_gqa");
  const ModelConfig base = ModelConfig::from_hf_dir(hf_dir);
  DmsAdapter random;
  random.config.mode = DmsMode::Adapter;
  random.config.window = 8;
  auto gen = at::detail::createCPUGenerator(7);
  for (int64_t i = 0; i < base.n_layers; ++i) {
    const double scale = 0.15 / std::sqrt(static_cast<double>(base.hidden_size));
    random.layers.push_back({at::rand({base.hidden_size}, gen) * 0.8 + 0.6,
                             at::randn({base.n_kv_heads, base.hidden_size}, gen) * scale, at::Tensor()});
  }
  ScratchDir scratch;
  DmsLoadOptions options;
  options.adapter_path = scratch / "adapter.safetensors";
  save_dms_adapter(options.adapter_path, base, random);

  const Transformer hf = load_dms_model(hf_dir, options);
  auto gguf = GgufFile::open(fixture_path("llama_gqa.gguf"));
  ModelConfig config = ModelConfig::from_gguf(*gguf);
  Weights weights = load_gguf_weights(gguf, config, at::kFloat);
  apply_dms_options(options, gguf->path(), config, weights);
  const Transformer from_gguf(std::move(config), std::move(weights));

  const auto tokens = Reference("llama_gqa.ref.safetensors").ids("prompt.3");
  const std::vector<int64_t> chunks = {250, 1};
  PagedSequence hf_cache(hf), gguf_cache(from_gguf);
  AttentionRecorder seen(base.n_layers);
  const at::Tensor ours = run_chunks(hf, hf_cache, tokens, chunks, &seen);
  expect_logits_near(run_chunks(from_gguf, gguf_cache, tokens, chunks), ours, 1e-4, "GGUF vs safetensors base");
  const double flagged = (seen.logits() > 0).to(at::kFloat).mean().item<double>();
  EXPECT_GT(flagged, 0.1);
  EXPECT_LT(flagged, 0.9);
  DenseSequence dense(hf);
  EXPECT_GT((run_chunks(hf, dense, tokens, chunks) - ours).abs().max().item<double>(), 0.1);
}

TEST(DmsAdapter, AdapterModeWithoutDecisionHeadsIsRefused) {
  const std::string base = dms_fixture("mode_b_head_base");
  DmsLoadOptions options;
  options.overrides.mode = DmsMode::Adapter;
  const std::string msg = error_of([&] { load_dms_model(base, options); });
  EXPECT_MENTIONS(msg, base);
  EXPECT_MENTIONS(msg, "dms_proj_alpha");
}

// config.json asks for adapter tensors (dms_separate_alpha) that the checkpoint lacks.
TEST(DmsAdapter, CheckpointWithoutItsDecisionHeadsIsRefused) {
  ScratchDir scratch;
  const std::string base = dms_fixture("mode_b_head_base");
  std::filesystem::copy_file(base + "/model.safetensors", scratch / "model.safetensors");
  std::ifstream in(base + "/config.json");
  json cfg = json::parse(in);
  cfg["dms_separate_alpha"] = true;
  std::ofstream(scratch / "config.json") << cfg.dump();
  const std::string msg = error_of([&] { load_dms_model((scratch / "").string()); });
  EXPECT_MENTIONS(msg, "model.safetensors");
  EXPECT_MENTIONS(msg, "missing tensor 'model.layers.0.self_attn.dms_proj_alpha_norm.weight'");
}

TEST(DmsAdapter, WriterChecksShapes) {
  const Transformer model = load_dms_model(dms_fixture("mode_b_head"));
  DmsAdapter a = built_in_adapter(model);
  a.layers[1].proj = a.layers[1].proj.t();
  ScratchDir scratch;
  const std::string path = scratch / "adapter.safetensors";
  const std::string msg = error_of([&] { save_dms_adapter(path, model.config(), a); });
  EXPECT_MENTIONS(msg, "model.layers.1.self_attn.dms_proj_alpha.weight");
  EXPECT_FALSE(std::filesystem::exists(path));
  a = built_in_adapter(model);
  a.config.mode = DmsMode::QueryChannel;
  EXPECT_MENTIONS(error_of([&] { save_dms_adapter(path, model.config(), a); }), "adapter");
}

}  // namespace
}  // namespace dms::test
