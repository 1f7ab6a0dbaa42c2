#include "model/activation_checkpoint.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace longtune::model {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                            BlockImpl* block) {
    // Runs with grad mode off: no graph, so the layer's activations are freed right away.
    ctx->save_for_backward({x, cos, sin});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    return block->forward(x, cos, sin);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto* block = reinterpret_cast<BlockImpl*>(ctx->saved_data["block"].toInt());
    at::Tensor x = saved[0].detach().requires_grad_(true);
    at::Tensor y;
    {
      // The engine runs backward with grad mode = create_graph (false); recomputation needs a graph.
      torch::autograd::AutoGradMode enable_grad(true);
      y = block->forward(x, saved[1], saved[2]);
    }
    // Accumulates into the layer's parameter .grad (and fires their hooks), returns dL/dx.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpointed_block_forward(BlockImpl& block, const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin) {
  return CheckpointFunction::apply(x, cos, sin, &block);
}

}  // namespace longtune::model
