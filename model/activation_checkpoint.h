// Activation checkpointing for one decoder layer: the forward keeps only the layer's input, the
// backward recomputes the layer with grad enabled and back-propagates through it (a reentrant
// backward, like PyTorch's use_reentrant=True). Gradients equal those of the plain forward.
// Not here: selective (per-op) checkpointing, RNG replay (LLaMA has no dropout).
#pragma once

#include <ATen/core/Tensor.h>

#include "model/block.h"

namespace longtune::model {

// y = block(x, cos, sin) without keeping the layer's intermediate activations for backward.
at::Tensor checkpointed_block_forward(BlockImpl& block, const at::Tensor& x, const at::Tensor& cos,
                                      const at::Tensor& sin);

}  // namespace longtune::model
