// One LLaMA decoder layer: pre-norm attention and pre-norm SwiGLU MLP, each in a residual branch.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/attention.h"
#include "model/config.h"
#include "model/feed_forward.h"
#include "model/rms_norm.h"

namespace longtune::model {

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ModelConfig& config, const ParameterOptions& options);
  // x (B, T, d) -> (B, T, d)
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                     LayerKVCache* cache = nullptr);

  RMSNorm input_layernorm{nullptr};
  Attention self_attn{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
  FeedForward mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace longtune::model
