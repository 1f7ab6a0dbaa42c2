// Next-token cross-entropy as HF computes it for causal LMs: logits upcast to fp32, position t
// predicts token t+1, the last position predicts nothing. Two forms: on whole logits (B, T, V), and
// fused with the head over chunks of rows, so that the fp32 logits of a 32k-token sequence with a
// 128k vocabulary (~16 GB per sequence) never exist at once, in forward or in backward.
#pragma once

#include <ATen/core/Tensor.h>

namespace longtune::model {

// Rows of the fused head + cross-entropy computed at once: the fp32 logits of one chunk are
// kLossChunkRows × vocab × 4 bytes (0.5 GB at 128k vocabulary).
inline constexpr int64_t kLossChunkRows = 1024;

// Mean NLL over all predicted tokens of logits (B, T, V) for tokens (B, T): HF's model(ids, labels=ids).loss.
at::Tensor causal_lm_loss(const at::Tensor& logits, const at::Tensor& tokens);

// Sum of NLL of logits (B, T, V) against explicit targets (B, T); targets equal to `ignore_index`
// are skipped. Used when the mean must span several micro-batches or ranks.
at::Tensor nll_sum(const at::Tensor& logits, const at::Tensor& targets, int64_t ignore_index = -100);

// Per-row NLL (N) in fp32 of logits = hidden (N, d) · weightᵀ (V, d) against targets (N), 0 where
// the target is `ignore_index`: cross_entropy(linear(hidden, weight).float(), targets, reduction
// none) without its (N, V) logits. Forward and backward walk at most `chunk_rows` rows at a time
// (the rows split into chunks of near-equal size); backward
// recomputes each chunk's logits from the saved log-sum-exp (one extra head matmul) instead of
// keeping them. Gradients flow to hidden and weight in their dtype; the weight's is accumulated
// over chunks in fp32. Equal to the unchunked path within fp32 rounding (tests/model/loss_test).
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets,
                                int64_t chunk_rows = kLossChunkRows, int64_t ignore_index = -100);

}  // namespace longtune::model
