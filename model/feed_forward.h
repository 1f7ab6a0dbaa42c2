// LLaMA's SwiGLU feed-forward: down(silu(gate(x)) * up(x)). No biases.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/config.h"
#include "model/layers.h"

namespace longtune::model {

class FeedForwardImpl : public torch::nn::Module {
 public:
  FeedForwardImpl(const ModelConfig& config, const ParameterOptions& options);
  // x (B, T, d) -> (B, T, d)
  at::Tensor forward(const at::Tensor& x);

  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(FeedForward);

}  // namespace longtune::model
