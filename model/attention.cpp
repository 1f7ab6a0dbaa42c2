#include "model/attention.h"

#include <ATen/ATen.h>

#include <cmath>

#include "model/rope.h"

namespace longtune::model {

AttentionImpl::AttentionImpl(const ModelConfig& c, const ParameterOptions& options)
    : n_heads_(c.num_attention_heads), n_kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, n_heads_ * head_dim_, options));
  k_proj = register_module("k_proj", Linear(c.hidden_size, n_kv_heads_ * head_dim_, options));
  v_proj = register_module("v_proj", Linear(c.hidden_size, n_kv_heads_ * head_dim_, options));
  o_proj = register_module("o_proj", Linear(n_heads_ * head_dim_, c.hidden_size, options));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                  LayerKVCache* cache) {
  const int64_t B = x.size(0), T = x.size(1);
  // (B, T, H*hd) -> (B, T, H, hd) -> (B, H, T, hd)
  at::Tensor q = q_proj->forward(x).view({B, T, n_heads_, head_dim_}).transpose(1, 2);
  at::Tensor k = k_proj->forward(x).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  at::Tensor v = v_proj->forward(x).view({B, T, n_kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rope(q, cos, sin);
  k = apply_rope(k, cos, sin);

  std::optional<at::Tensor> mask;
  bool causal = T > 1;
  if (cache != nullptr) {
    if (cache->keys.defined()) {
      k = at::cat({cache->keys, k}, /*dim=*/2);  // (B, H_kv, T_past + T, hd)
      v = at::cat({cache->values, v}, /*dim=*/2);
      const int64_t past = k.size(2) - T;
      if (T > 1) {
        // SDPA's is_causal aligns top-left; with a prefix we need bottom-right: query i sees keys ≤ past+i.
        mask = at::ones({T, past + T}, x.options().dtype(at::kBool)).tril(past);
      }
      causal = false;
    }
    cache->keys = k;
    cache->values = v;
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  at::Tensor y = at::scaled_dot_product_attention(q, k, v, mask, /*dropout_p=*/0.0, /*is_causal=*/causal, scale,
                                                  /*enable_gqa=*/n_kv_heads_ != n_heads_);
  // (B, H, T, hd) -> (B, T, H, hd) -> (B, T, H*hd)
  y = y.transpose(1, 2).reshape({B, T, n_heads_ * head_dim_});
  return o_proj->forward(y);
}

}  // namespace longtune::model
