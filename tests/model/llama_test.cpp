// Model-level invariants that need no oracle: activation checkpointing gives the same gradients,
// the KV cache gives the same logits as a full forward, GQA and tied shapes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "model/llama.h"
#include "model/loss.h"

namespace longtune::model {
namespace {

TEST(Llama, ActivationCheckpointingGivesIdenticalGradients) {
  at::manual_seed(0);
  Llama a(model_preset("tiny-gqa"));
  Llama b(model_preset("tiny-gqa"));
  {
    torch::NoGradGuard g;
    auto pa = a->parameters(), pb = b->parameters();
    for (size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
  }
  b->set_activation_checkpointing(true);
  a->train();
  b->train();
  at::Tensor ids = at::randint(512, {2, 40}, at::kLong);
  causal_lm_loss(a->forward(ids), ids).backward();
  causal_lm_loss(b->forward(ids), ids).backward();
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(at::equal(pa[i].value().grad(), pb[i].value().grad())) << pa[i].key();
  }
}

TEST(Llama, KVCacheDecodingEqualsFullForward) {
  at::manual_seed(1);
  Llama m(model_preset("tiny-gqa"));
  m->eval();
  torch::NoGradGuard g;
  at::Tensor ids = at::randint(512, {1, 30}, at::kLong);
  at::Tensor full = m->forward(ids);
  KVCache cache;
  at::Tensor prefix = m->forward_cached(ids.narrow(1, 0, 20), cache);
  std::vector<at::Tensor> steps{prefix};
  steps.push_back(m->forward_cached(ids.narrow(1, 20, 3), cache));  // several tokens after a prefix
  for (int64_t t = 23; t < 30; ++t) steps.push_back(m->forward_cached(ids.narrow(1, t, 1), cache));
  EXPECT_LT((at::cat(steps, 1) - full).abs().max().item<double>(), 1e-5);
}

TEST(Llama, TiedEmbeddingsHaveNoHead) {
  ModelConfig c = model_preset("tiny");
  c.tie_word_embeddings = true;
  Llama m(c);
  for (const auto& p : m->named_parameters()) EXPECT_NE(p.key(), "lm_head.weight");
  EXPECT_EQ(m->forward(at::zeros({1, 3}, at::kLong)).size(-1), c.vocab_size);
}

TEST(Llama, PresetParameterCounts) {
  EXPECT_NEAR(model_preset("llama-7b").num_parameters() / 1e9, 6.74, 0.01);
  EXPECT_NEAR(model_preset("llama2-70b").num_parameters() / 1e9, 68.98, 0.01);
  EXPECT_NEAR(model_preset("tinyllama-1.1b").num_parameters() / 1e9, 1.10, 0.01);
}

}  // namespace
}  // namespace longtune::model
