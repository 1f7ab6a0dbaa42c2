#include "model/feed_forward.h"

#include <ATen/ATen.h>

namespace longtune::model {

FeedForwardImpl::FeedForwardImpl(const ModelConfig& c, const ParameterOptions& options) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, options));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, options));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, options));
}

at::Tensor FeedForwardImpl::forward(const at::Tensor& x) {
  return down_proj->forward(at::silu(gate_proj->forward(x)) * up_proj->forward(x));
}

}  // namespace longtune::model
