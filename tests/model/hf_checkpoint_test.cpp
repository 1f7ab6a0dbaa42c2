// Tests for model/hf_checkpoint's HfWeights: fp16 files convert straight into fp32 (never through
// bf16), any range reads the same elements as the whole tensor, and a directory that does not
// match the config is refused at open, naming the tensor.
#include "model/hf_checkpoint.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/llama.h"
#include "tests/test_support.h"

namespace longtune::model {
namespace {

TEST(HfWeights, Fp16FilesBecomeExactFp32AndRangesMatchTheWhole) {
  testing::TempDir dir;
  const ModelConfig config = model_preset("tiny-gqa");
  at::manual_seed(5);
  Llama source(config);
  HfSaveOptions options;
  options.dtype = at::kHalf;
  save_hf_model(*source, dir.path().string(), options);
  const HfWeights weights(dir.path().string(), config);
  for (const auto& p : source->named_parameters()) {
    const at::Tensor stored = p.value().detach().to(at::kHalf).reshape({-1});
    at::Tensor whole = at::empty({stored.numel()}, at::kFloat);
    weights.read(p.key(), 0, stored.numel(), whole);
    EXPECT_TRUE(at::equal(whole, stored.to(at::kFloat))) << p.key();
    const int64_t begin = stored.numel() / 3, end = stored.numel() - 7;
    at::Tensor part = at::empty({end - begin}, at::kFloat);
    weights.read(p.key(), begin, end, part);
    EXPECT_TRUE(at::equal(part, whole.narrow(0, begin, end - begin))) << p.key();
  }
  // Not rounded through bf16 on the way: fp16 keeps 3 more mantissa bits.
  at::Tensor head = at::empty({config.vocab_size * config.hidden_size}, at::kFloat);
  weights.read("lm_head.weight", 0, head.numel(), head);
  EXPECT_FALSE(at::equal(head, head.to(at::kBFloat16).to(at::kFloat)));
}

TEST(HfWeights, RefusesADirectoryThatDoesNotMatchTheConfig) {
  testing::TempDir dir;
  ModelConfig config = model_preset("tiny");
  at::manual_seed(6);
  Llama source(config);
  save_hf_model(*source, dir.path().string());
  ModelConfig wider = config;
  wider.intermediate_size = 192;
  testing::expect_error([&] { HfWeights(dir.path().string(), wider); }, {"mlp", "shape", "model.safetensors"});
  ModelConfig deeper = config;
  deeper.num_hidden_layers = 3;
  testing::expect_error([&] { HfWeights(dir.path().string(), deeper); }, {"model.layers.2.", "missing"});
  const HfWeights weights(dir.path().string(), config);
  at::Tensor out = at::empty({4}, at::kFloat);
  testing::expect_error([&] { weights.read("model.norm.weight", 62, 66, out); }, {"model.norm.weight", "range"});
}

}  // namespace
}  // namespace longtune::model
