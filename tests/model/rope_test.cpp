// RoPE frequencies against their closed forms (method.md §1); HF parity itself is in tests/reference.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "model/config.h"
#include "model/rope.h"

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
