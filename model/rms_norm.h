// RMSNorm as in LLaMA / HF LlamaRMSNorm: statistics in fp32, scaled by a learned weight, result in
// the input dtype. No bias, no mean subtraction (that would be LayerNorm).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "model/layers.h"

namespace longtune::model {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const ParameterOptions& options);
  // x (..., dim) -> (..., dim), same dtype as x.
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

}  // namespace longtune::model
