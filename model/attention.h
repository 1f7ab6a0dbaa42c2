// Causal multi-head self-attention with grouped-query heads (n_kv_heads ≤ n_heads) and RoPE on q, k,
// through at::scaled_dot_product_attention. Optional KV cache for incremental decoding.
// Not here: sliding windows, attention biases, dropout (LLaMA uses none).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/config.h"
#include "model/layers.h"

namespace longtune::model {

// Keys and values of earlier positions for one layer, (B, n_kv_heads, T_past, head_dim) each.
struct LayerKVCache {
  at::Tensor keys;
  at::Tensor values;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ModelConfig& config, const ParameterOptions& options);
  // x (B, T, d); cos/sin (T, head_dim) for the positions of x. With a cache, x's positions follow
  // the cached ones and the cache is extended. Returns (B, T, d).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     LayerKVCache* cache = nullptr);

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  int64_t n_heads_, n_kv_heads_, head_dim_;
};
TORCH_MODULE(Attention);

}  // namespace longtune::model
