// Tests for model/seeded_init, model/layers and model/weight_source: HF's init computed per range
// equals the whole-tensor values bitwise (across chunk boundaries), has HF's statistics, and
// depends on the seed and the name; hollow models hold no memory; a model built from a weight
// source equals the source.
#include "model/seeded_init.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/layers.h"
#include "model/llama.h"
#include "model/weight_source.h"
#include "tests/test_support.h"

namespace longtune::model {
namespace {

at::Tensor read(const WeightSource& source, const std::string& name, int64_t begin, int64_t end) {
  at::Tensor out = at::empty({end - begin}, at::kFloat);
  source.read(name, begin, end, out);
  return out;
}

TEST(SeededInit, AnyRangeEqualsTheSameSliceOfTheWholeTensor) {
  const SeededInit init(42);
  const int64_t numel = 3 * SeededInit::kChunk + 1234;
  const at::Tensor whole = read(init, "model.layers.0.mlp.up_proj.weight", 0, numel);
  for (const auto& [begin, end] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 1}, {17, 4000}, {SeededInit::kChunk - 5, SeededInit::kChunk + 5}, {100, 2 * SeededInit::kChunk + 77},
           {3 * SeededInit::kChunk, numel}, {numel, numel}})
    EXPECT_TRUE(at::equal(read(init, "model.layers.0.mlp.up_proj.weight", begin, end),
                          whole.narrow(0, begin, end - begin)))
        << begin << ".." << end;
}

TEST(SeededInit, HasHfStatisticsAndDependsOnSeedAndName) {
  const at::Tensor a = read(SeededInit(1), "lm_head.weight", 0, 400000);
  EXPECT_NEAR(a.mean().item<double>(), 0.0, 2e-4);
  EXPECT_NEAR(a.std().item<double>(), 0.02, 2e-4);
  EXPECT_FALSE(at::equal(a, read(SeededInit(2), "lm_head.weight", 0, 400000)));
  EXPECT_FALSE(at::equal(a, read(SeededInit(1), "model.embed_tokens.weight", 0, 400000)));
  EXPECT_TRUE(at::equal(read(SeededInit(1), "model.layers.3.input_layernorm.weight", 0, 64), at::ones({64})));
  EXPECT_NEAR(read(SeededInit(1, 0.5), "lm_head.weight", 0, 100000).std().item<double>(), 0.5, 5e-3);
}

TEST(ParameterInit, HollowModelsHoldNoMemoryAndEmptyOnesHoldAll) {
  const ModelConfig config = model_preset("tiny");
  Llama hollow(config, ParameterOptions{ParameterInit::kHollow, at::kBFloat16});
  Llama empty(config, ParameterOptions{ParameterInit::kEmpty, at::kBFloat16});
  size_t hollow_bytes = 0, empty_bytes = 0;
  for (const auto& p : hollow->parameters()) {
    hollow_bytes += p.storage().nbytes();
    EXPECT_EQ(p.scalar_type(), at::kBFloat16);
  }
  for (const auto& p : empty->parameters()) empty_bytes += p.storage().nbytes();
  EXPECT_EQ(hollow_bytes, 0u);
  EXPECT_EQ(empty_bytes, static_cast<size_t>(config.num_parameters() * 2));
  EXPECT_EQ(hollow->named_parameters().size(), empty->named_parameters().size());
  testing::expect_error([&] { load_weights(*hollow, SeededInit(0)); }, {"has no storage"});
}

TEST(WeightSource, ModelsBuiltFromASourceEqualIt) {
  const ModelConfig config = model_preset("tiny-gqa");
  at::manual_seed(3);
  Llama random(config);  // the default: HF's init from a seed the global generator draws
  at::manual_seed(3);
  Llama again(config);
  Llama copy(config, ParameterOptions{ParameterInit::kEmpty});
  const ModuleWeights weights(*random);
  load_weights(*copy, weights);
  for (const auto& p : random->named_parameters()) {
    EXPECT_TRUE(at::equal(p.value(), again->named_parameters()[p.key()])) << p.key();
    EXPECT_TRUE(at::equal(p.value(), copy->named_parameters()[p.key()])) << p.key();
  }
  testing::expect_error([&] { read(weights, "model.nope.weight", 0, 1); }, {"model.nope.weight"});
  testing::expect_error([&] { read(weights, "model.norm.weight", 0, 1 << 20); }, {"outside", "model.norm.weight"});
}

}  // namespace
}  // namespace longtune::model
