// RoPE frequencies against their closed forms (method.md §1); HF parity itself is in tests/reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "model/config.h"
#include "model/rope.h"
#include "tests/test_support.h"

namespace longtune::model {
namespace {

ModelConfig llama7b_like() {
  ModelConfig c = model_preset("llama-7b");
  return c;
}

TEST(Rope, DefaultIsTheta_j) {
  ModelConfig c = llama7b_like();
  at::Tensor inv = rope_frequencies(c, 2048).inv_freq;
  ASSERT_EQ(inv.numel(), 64);
  for (int j : {0, 1, 17, 63}) EXPECT_NEAR(inv[j].item<double>(), std::pow(10000.0, -2.0 * j / 128), 1e-7);
}

TEST(Rope, LinearDividesFrequenciesByFactor) {
  ModelConfig base = llama7b_like();
  ModelConfig pi = with_rope_scaling(base, parse_rope_spec("linear:4"));
  EXPECT_EQ(pi.max_position_embeddings, 8192);
  EXPECT_EQ(pi.rope_scaling.original_max_position_embeddings.value(), 2048);
  at::Tensor a = rope_frequencies(base, 8192).inv_freq / 4;
  at::Tensor b = rope_frequencies(pi, 8192).inv_freq;
  EXPECT_TRUE(at::allclose(a, b, 0, 0));
  // f'(x, m) = f(x, m/4): the angle at position 4m under PI equals the angle at m without it.
  auto [cos_pi, sin_pi] = rope_cos_sin(rope_frequencies(pi, 8192), at::arange(0, 8192, 4, at::kLong), at::kFloat);
  auto [cos0, sin0] = rope_cos_sin(rope_frequencies(base, 2048), at::arange(0, 2048, at::kLong), at::kFloat);
  EXPECT_LT((cos_pi - cos0).abs().max().item<double>(), 1e-3);
}

TEST(Rope, YarnRampMatchesDerivedLlama7bRange) {
  // method.md: for dim 128, base 1e4, L 2048 → pairs 0–15 untouched, 42–63 divided by s.
  ModelConfig c = with_rope_scaling(llama7b_like(), parse_rope_spec("yarn:4"));
  RopeFrequencies f = rope_frequencies(c, 8192);
  at::Tensor base = rope_frequencies(llama7b_like(), 2048).inv_freq;
  EXPECT_TRUE(at::allclose(f.inv_freq.narrow(0, 0, 16), base.narrow(0, 0, 16)));
  EXPECT_TRUE(at::allclose(f.inv_freq.narrow(0, 42, 22), base.narrow(0, 42, 22) / 4));
  EXPECT_NEAR(f.attention_scaling, 0.1 * std::log(4.0) + 1, 1e-12);
}

TEST(Rope, FactorCountsFromTheModelsOwnWindow) {
  // A Llama-2-like model (window 4096): linear:4 means 16k, not 4 × some hard-coded 2048.
  ModelConfig llama2 = llama7b_like();
  llama2.max_position_embeddings = 4096;
  ModelConfig pi = with_rope_scaling(llama2, parse_rope_spec("linear:4"));
  EXPECT_EQ(pi.rope_scaling.original_max_position_embeddings.value(), 4096);
  EXPECT_EQ(pi.max_position_embeddings, 16384);
  // llama3 and yarn need no explicit original window either.
  ModelConfig yarn = with_rope_scaling(llama2, parse_rope_spec("yarn:2"));
  EXPECT_EQ(yarn.rope_scaling.original_max_position_embeddings.value(), 4096);
  EXPECT_EQ(yarn.max_position_embeddings, 8192);
}

TEST(Rope, LinearOnLinearComposesOverThePretrainedWindow) {
  // A model already extended 2048 -> 8192 (linear 4), extended again to 32768: linear 16 over 2048,
  // whose angle at position 16m equals the pretrained model's at m (and the ×4 model's at 4m).
  const ModelConfig base = llama7b_like();
  const ModelConfig at8k = with_rope_scaling(base, parse_rope_spec("linear:4"));
  const ModelConfig at32k = with_rope_scaling(at8k, parse_rope_spec("linear:16"));
  EXPECT_EQ(at32k.rope_scaling.original_max_position_embeddings.value(), 2048);
  EXPECT_EQ(at32k.max_position_embeddings, 32768);
  EXPECT_TRUE(at::allclose(rope_frequencies(at32k, 32768).inv_freq, rope_frequencies(base, 2048).inv_freq / 16, 0, 0));
  EXPECT_TRUE(at::allclose(rope_frequencies(at32k, 32768).inv_freq, rope_frequencies(at8k, 8192).inv_freq / 4,
                           1e-7, 0));
  // Stating the pretrained window is allowed; another one is a named error.
  EXPECT_EQ(with_rope_scaling(at8k, parse_rope_spec("linear:16:2048")).max_position_embeddings, 32768);
  testing::expect_error([&] { with_rope_scaling(at8k, parse_rope_spec("linear:4:8192")); },
                        {"differs from the pretrained window 2048"});
  // "none" gives back the model as pretrained.
  const ModelConfig plain = with_rope_scaling(at8k, parse_rope_spec("none"));
  EXPECT_EQ(plain.rope_scaling.type, RopeType::kDefault);
  EXPECT_EQ(plain.max_position_embeddings, 2048);
}

TEST(Rope, AnotherTypeOnAScaledModelIsANamedError) {
  ModelConfig llama31 = llama7b_like();  // Llama 3.1's own scaling: llama3, factor 8 over 8192
  llama31.max_position_embeddings = 131072;
  llama31.rope_scaling.type = RopeType::kLlama3;
  llama31.rope_scaling.factor = 8;
  llama31.rope_scaling.original_max_position_embeddings = 8192;
  llama31.rope_scaling.low_freq_factor = 1;
  llama31.rope_scaling.high_freq_factor = 4;
  testing::expect_error([&] { with_rope_scaling(llama31, parse_rope_spec("linear:2")); },
                        {"the model already carries llama3 scaling (factor 8 over its pretrained window 8192)"});
  testing::expect_error([&] { with_rope_scaling(llama31, parse_rope_spec("yarn:4")); }, {"carries llama3"});
  // The same type composes: factor 32 over 8192 (131072 -> 262144), the band kept.
  RopeScaling wider;
  wider.type = RopeType::kLlama3;
  wider.factor = 32;
  const ModelConfig at256k = with_rope_scaling(llama31, wider);
  EXPECT_EQ(at256k.max_position_embeddings, 262144);
  EXPECT_EQ(at256k.rope_scaling.low_freq_factor.value(), 1);
  EXPECT_EQ(at256k.rope_scaling.high_freq_factor.value(), 4);
}

TEST(Rope, RotateHalfIsHalfSplit) {
  at::Tensor x = at::arange(4, at::kFloat);
  EXPECT_TRUE(at::equal(rotate_half(x), at::tensor({-2.f, -3.f, 0.f, 1.f})));
}

TEST(Rope, BadSpecsAreNamedErrors) {
  EXPECT_THROW(parse_rope_spec("spiral:2"), std::exception);
  EXPECT_THROW(parse_rope_spec("linear"), std::exception);
  EXPECT_THROW(parse_rope_spec("linear:0.5"), std::exception);
  EXPECT_THROW(parse_rope_spec("linear:x"), std::exception);
}

}  // namespace
}  // namespace longtune::model
