// eval/greedy_decode: decoding with the KV cache equals recomputing the whole sequence for every
// new token (the oracle, written out here): identical greedy tokens, and logits within 1e-4 of the
// largest logit (fp32; only the summation order of the attention differs). Also the stop token.
#include "eval/greedy_decode.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "tests/test_support.h"

namespace longtune::eval {
namespace {

// Greedy decoding the slow way: a full forward over prompt + generated tokens at every step.
GreedyOutput recompute_decode(model::LlamaImpl& model, std::vector<int64_t> sequence, int64_t max_new_tokens) {
  torch::NoGradGuard no_grad;
  GreedyOutput out;
  std::vector<at::Tensor> rows;
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const at::Tensor logits = model.forward(at::tensor(sequence, at::kLong).unsqueeze(0));  // (1, T, V)
    const at::Tensor last = logits[0][-1].to(at::kFloat);                                 // (V)
    const int64_t next = last.argmax().item<int64_t>();
    out.tokens.push_back(next);
    rows.push_back(last);
    sequence.push_back(next);
  }
  out.logits = at::stack(rows);
  return out;
}

model::Llama make_model(const char* preset, uint64_t seed) {
  at::manual_seed(seed);
  model::Llama m(model::model_preset(preset));
  m->init_weights(0.2);  // peaked logits: the greedy choice is not a near-tie
  m->eval();
  return m;
}

std::vector<int64_t> random_prompt(int64_t length, int64_t vocab, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor ids = at::randint(vocab, {length}, at::kLong);
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + length);
}

TEST(GreedyDecode, KVCacheEqualsFullRecompute) {
  double worst = 0;
  for (const char* preset : {"tiny", "tiny-gqa"}) {
    model::Llama m = make_model(preset, 3);
    // Prompts inside and beyond the model's window of 128 (decoding continues past it).
    for (int64_t length : {1, 17, 120, 200}) {
      const std::vector<int64_t> prompt = random_prompt(length, 512, length);
      const GreedyOutput cached = greedy_decode(*m, prompt, /*max_new_tokens=*/12);
      const GreedyOutput full = recompute_decode(*m, prompt, 12);
      ASSERT_EQ(cached.tokens, full.tokens) << preset << " prompt " << length;
      ASSERT_EQ(cached.logits.sizes(), full.logits.sizes());
      const double err = ((cached.logits - full.logits).abs().max() / full.logits.abs().max()).item<double>();
      worst = std::max(worst, err);
      EXPECT_LE(err, 1e-4) << preset << " prompt " << length;
    }
  }
  std::cout << "KV-cache vs recompute: worst max|d logits| / max|logits| = " << worst << "\n";
}

TEST(GreedyDecode, StopsAfterTheStopToken) {
  model::Llama m = make_model("tiny", 4);
  const std::vector<int64_t> prompt = random_prompt(30, 512, 5);
  const GreedyOutput free_run = greedy_decode(*m, prompt, 6);
  ASSERT_EQ(free_run.tokens.size(), 6u);
  // Stopping on the third token generated: the output ends there, the same tokens up to it.
  const GreedyOutput stopped = greedy_decode(*m, prompt, 6, /*stop_id=*/free_run.tokens[2]);
  const auto first = std::find(free_run.tokens.begin(), free_run.tokens.end(), free_run.tokens[2]);
  const size_t expected = static_cast<size_t>(first - free_run.tokens.begin()) + 1;
  EXPECT_EQ(stopped.tokens, std::vector<int64_t>(free_run.tokens.begin(), free_run.tokens.begin() + expected));
  EXPECT_EQ(stopped.logits.size(0), static_cast<int64_t>(expected));
  // Running every step regardless (a sharded model's lockstep) returns the same output.
  const GreedyOutput every = greedy_decode(*m, prompt, 6, free_run.tokens[2], /*every_step=*/true);
  EXPECT_EQ(every.tokens, stopped.tokens);
  EXPECT_TRUE(at::equal(every.logits, stopped.logits));
}

TEST(GreedyDecode, RejectsEmptyPromptAndNoTokens) {
  model::Llama m = make_model("tiny", 5);
  testing::expect_error([&] { greedy_decode(*m, {}, 3); }, {"empty prompt"});
  testing::expect_error([&] { greedy_decode(*m, {1, 2}, 0); }, {"max_new_tokens", "0"});
}

}  // namespace
}  // namespace longtune::eval
