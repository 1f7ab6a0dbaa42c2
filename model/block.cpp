#include "model/block.h"

namespace longtune::model {

BlockImpl::BlockImpl(const ModelConfig& c, const ParameterOptions& options) {
  // Registered under HF's names so named_parameters() are the checkpoint's names.
  self_attn = register_module("self_attn", Attention(c, options));
  mlp = register_module("mlp", FeedForward(c, options));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

at::Tensor BlockImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                              LayerKVCache* cache) {
  at::Tensor h = x + self_attn->forward(input_layernorm->forward(x), cos, sin, cache);
  return h + mlp->forward(post_attention_layernorm->forward(h));
}

}  // namespace longtune::model
