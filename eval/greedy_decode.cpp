#include "eval/greedy_decode.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/grad_mode.h>

#include "common/check.h"

namespace longtune::eval {

GreedyOutput greedy_decode(model::LlamaImpl& model, const std::vector<int64_t>& prompt, int64_t max_new_tokens,
                           int64_t stop_id, bool every_step) {
  LT_CHECK(!prompt.empty(), "greedy_decode: empty prompt");
  LT_CHECK(max_new_tokens >= 1, "greedy_decode: max_new_tokens must be >= 1, got {}", max_new_tokens);
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const at::Device device = model.parameters().front().device();
  model::KVCache cache;
  at::Tensor input = at::tensor(prompt, at::kLong).unsqueeze(0).to(device);  // (1, T_prompt)
  GreedyOutput out;
  std::vector<at::Tensor> chosen_from;
  bool stopped = false;
  for (int64_t step = 0; step < max_new_tokens; ++step) {
    const at::Tensor logits = model.forward_cached(input, cache);         // (1, T_in, V)
    const at::Tensor last = logits.select(1, -1).squeeze(0).to(at::kFloat);  // (V)
    const int64_t next = last.argmax().item<int64_t>();
    if (!stopped) {
      out.tokens.push_back(next);
      chosen_from.push_back(last.cpu());
    }
    stopped = stopped || next == stop_id;
    if (stopped && !every_step) break;
    input = at::full({1, 1}, next, at::TensorOptions().dtype(at::kLong).device(device));  // (1, 1)
  }
  out.logits = at::stack(chosen_from);  // (n, V)
  if (was_training) model.train();
  return out;
}

}  // namespace longtune::eval
