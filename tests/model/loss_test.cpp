// The fused, chunked head + cross-entropy against the plain path it replaces (whole logits, then
// at::cross_entropy_loss): NLL and both gradients, at Llama 3's vocabulary of 128256.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "common/check.h"
#include "model/llama.h"
#include "model/loss.h"

namespace longtune::model {
namespace {

struct Result {
  at::Tensor nll, grad_hidden, grad_weight;
};

// Per-row NLL and the gradients of sum(nll * upstream) by the plain path, or by the fused one.
Result run(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, const at::Tensor& upstream,
           int64_t chunk_rows) {
  at::Tensor h = hidden.detach().clone().requires_grad_(true);
  at::Tensor w = weight.detach().clone().requires_grad_(true);
  at::Tensor nll = chunk_rows == 0 ? at::cross_entropy_loss(at::linear(h, w).to(at::kFloat), targets, {},
                                                            at::Reduction::None, -100)
                                   : linear_cross_entropy(h, w, targets, chunk_rows);
  (nll * upstream).sum().backward();
  return {nll.detach(), h.grad(), w.grad()};
}

double relative_error(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want.to(at::kDouble)).norm().item<double>() / want.to(at::kDouble).norm().item<double>();
}

TEST(LinearCrossEntropy, EqualsTheUnchunkedLossAndGradientsAtA128kVocabulary) {
  at::manual_seed(0);
  const int64_t rows = 69, d = 16, vocab = 128256;
  at::Tensor hidden = at::randn({rows, d});
  at::Tensor weight = at::randn({vocab, d}) * 0.5;
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  targets.index_put_({at::arange(0, rows, 9)}, -100);  // some positions are not scored
  at::Tensor upstream = at::rand({rows}) + 0.5;
  const Result plain = run(hidden, weight, targets, upstream, 0);
  const Result exact = run(hidden.to(at::kDouble), weight.to(at::kDouble), targets, upstream.to(at::kDouble), 0);
  // 69 = 64 + 5 rows is balanced into chunks of 35 and 34, never a lone short chunk.
  for (int64_t chunk : {16, 33, 64, 70, 4096}) {
    const Result fused = run(hidden, weight, targets, upstream, chunk);
    EXPECT_LE(relative_error(fused.nll, plain.nll), 1e-6) << "chunk " << chunk;
    EXPECT_LE(relative_error(fused.grad_hidden, plain.grad_hidden), 1e-6) << "chunk " << chunk;
    EXPECT_LE(relative_error(fused.grad_weight, plain.grad_weight), 1e-6) << "chunk " << chunk;
    EXPECT_TRUE(at::allclose(fused.nll, plain.nll, 1e-6, 1e-6)) << "chunk " << chunk;
    EXPECT_EQ(fused.nll.index({targets.eq(-100)}).abs().sum().item<double>(), 0.0);
    // And no further from the fp64 truth than the plain fp32 path is (the 128k-term sums round).
    EXPECT_LE(relative_error(fused.grad_hidden, exact.grad_hidden),
              2 * relative_error(plain.grad_hidden, exact.grad_hidden) + 1e-7) << "chunk " << chunk;
    EXPECT_LE(relative_error(fused.grad_weight, exact.grad_weight),
              2 * relative_error(plain.grad_weight, exact.grad_weight) + 1e-7) << "chunk " << chunk;
  }
  // The loss is a real one: about log(vocab) plus the spread of random logits, not zero.
  EXPECT_GT(plain.nll.sum().item<double>(), 0.0);
}

TEST(LinearCrossEntropy, Bf16StaysWithinBf16RoundingOfTheUnchunkedPath) {
  at::manual_seed(1);
  const int64_t rows = 40, d = 32, vocab = 5000;
  at::Tensor hidden = at::randn({rows, d}).to(at::kBFloat16);
  at::Tensor weight = (at::randn({vocab, d}) * 0.2).to(at::kBFloat16);
  at::Tensor targets = at::randint(vocab, {rows}, at::kLong);
  at::Tensor upstream = at::ones({rows});
  const Result plain = run(hidden, weight, targets, upstream, 0);
  const Result fused = run(hidden, weight, targets, upstream, 7);
  EXPECT_EQ(fused.nll.scalar_type(), at::kFloat);
  EXPECT_EQ(fused.grad_hidden.scalar_type(), at::kBFloat16);
  EXPECT_EQ(fused.grad_weight.scalar_type(), at::kBFloat16);
  EXPECT_LE(relative_error(fused.nll, plain.nll), 1e-6);  // same logits per row, then fp32
  EXPECT_LE(relative_error(fused.grad_hidden, plain.grad_hidden), 1e-2);
  EXPECT_LE(relative_error(fused.grad_weight, plain.grad_weight), 1e-2);
}

TEST(LinearCrossEntropy, RefusesMismatchedShapesAndAnEmptyChunk) {
  at::Tensor hidden = at::randn({4, 8}), weight = at::randn({10, 8});
  at::Tensor targets = at::zeros({4}, at::kLong);
  EXPECT_THROW(linear_cross_entropy(hidden, at::randn({10, 7}), targets), Error);
  EXPECT_THROW(linear_cross_entropy(hidden, weight, at::zeros({5}, at::kLong)), Error);
  EXPECT_THROW(linear_cross_entropy(hidden, weight, targets, 0), Error);
}

// The model's token_nll (final norm + fused head) against its logits through nll_sum, with an
// untied and a tied head: same loss, same gradient for every parameter.
TEST(LinearCrossEntropy, ModelTokenNllEqualsLossOnItsLogits) {
  for (const char* preset : {"tiny", "tiny-gqa"}) {
    at::manual_seed(2);
    ModelConfig config = model_preset(preset);
    for (bool tied : {false, true}) {
      config.tie_word_embeddings = tied;
      at::manual_seed(3);
      Llama a(config), b(config);
      {
        torch::NoGradGuard g;
        auto pa = a->parameters(), pb = b->parameters();
        for (size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
      }
      at::Tensor ids = at::randint(config.vocab_size, {2, 33}, at::kLong);
      at::Tensor inputs = ids.slice(1, 0, 32), targets = ids.slice(1, 1);
      at::Tensor want = nll_sum(a->forward(inputs), targets);
      at::Tensor got = b->token_nll(inputs, targets, /*loss_chunk_rows=*/5).sum();
      EXPECT_LE(std::abs(got.item<double>() - want.item<double>()) / want.item<double>(), 1e-6) << preset;
      want.backward();
      got.backward();
      auto pa = a->named_parameters(), pb = b->named_parameters();
      ASSERT_EQ(pa.size(), pb.size());
      for (size_t i = 0; i < pa.size(); ++i)
        EXPECT_LE(relative_error(pb[i].value().grad(), pa[i].value().grad()), 1e-5)
            << preset << (tied ? " tied " : " ") << pa[i].key();
    }
  }
}

}  // namespace
}  // namespace longtune::model
