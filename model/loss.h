// Next-token cross-entropy as HF computes it for causal LMs: logits upcast to fp32, position t
// predicts token t+1, the last position predicts nothing.
#pragma once

#include <ATen/core/Tensor.h>

namespace longtune::model {

// Mean NLL over all predicted tokens of logits (B, T, V) for tokens (B, T): HF's model(ids, labels=ids).loss.
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& tokens);

// Sum of NLL of logits (B, T, V) against explicit targets (B, T); targets equal to `ignore_index`
// are skipped. Used when the mean must span several micro-batches or ranks.
at::Tensor nll_sum(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index = -100);

}  // namespace longtune::model
