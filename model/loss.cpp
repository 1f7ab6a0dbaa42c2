#include "model/loss.h"

#include <ATen/ATen.h>

namespace longtune::model {

at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& tokens) {
  const int64_t T = tokens.size(1);
  // (B, T-1, V) predicts (B, T-1)
  at::Tensor shifted_logits = logits.narrow(1, 0, T - 1).to(at::kFloat).reshape({-1, logits.size(-1)});
  at::Tensor targets = tokens.narrow(1, 1, T - 1).reshape({-1});
  return at::cross_entropy_loss(shifted_logits, targets);
}

at::Tensor nll_sum(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index) {
  at::Tensor flat = logits.to(at::kFloat).reshape({-1, logits.size(-1)});
  return at::cross_entropy_loss(flat, targets.reshape({-1}), /*weight=*/{}, at::Reduction::Sum, ignore_index);
}

}  // namespace longtune::model
