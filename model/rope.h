// Rotary position embedding (RoPE) in HF's half-split (rotate_half) layout, with the rope_scaling
// variants of HF transformers: default, linear (Position Interpolation), dynamic NTK, yarn, llama3.
// Each computes exactly what transformers' modeling_rope_utils computes, op for op, in fp32.
// Not here: Meta's interleaved layout (HF checkpoints are already permuted to half-split).
#pragma once

#include <ATen/core/Tensor.h>

#include <utility>

#include "model/config.h"

namespace longtune::model {

// HF's (inv_freq, attention_factor) pair: inv_freq is fp32 (rotary_dim/2,); cos/sin get multiplied
// by attention_scaling (yarn's mscale; 1 otherwise).
struct RopeFrequencies {
  at::Tensor inv_freq;
  double attention_scaling = 1.0;
};

// Frequencies for a forward over positions [0, seq_len). Only `dynamic` depends on seq_len (HF
// recomputes it when seq_len exceeds max_position_embeddings; we do it per call, statelessly).
RopeFrequencies rope_frequencies(const ModelConfig& config, int64_t seq_len);

// cos, sin of shape (T, rotary_dim) for positions (T,) (int64), computed in fp32 and cast to `dtype`.
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const RopeFrequencies& freqs, const at::Tensor& positions,
                                               at::ScalarType dtype);

// x (B, H, T, head_dim) rotated by cos/sin (T, head_dim): x*cos + rotate_half(x)*sin.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// (x1, x2) -> (-x2, x1) over the last dim.
at::Tensor rotate_half(const at::Tensor& x);

}  // namespace longtune::model
