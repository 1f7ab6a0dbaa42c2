// The model's leaf layers (a bias-free Linear and an Embedding) and how every parameter of the
// model comes into being: randomly initialised, allocated but unset for a weight source to fill, or
// "hollow" (shapes and dtype, no memory) for sharding to give storage to. LibTorch's own Linear and
// Embedding always allocate and initialise their weights, which at 65B is the whole model in fp32
// on every rank before a single shard is kept. Not the values of an initialisation
// (model/seeded_init) and not where weights are read from (model/weight_source).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace longtune::model {

enum class ParameterInit {
  kRandom,  // HF's initialisation (model/seeded_init), drawn by LlamaImpl's constructor with a seed
            // from the global CPU generator; a layer alone only allocates
  kEmpty,   // allocated, values unset: a WeightSource fills them
  kHollow,  // shapes and dtype only, zero bytes of storage: sharding gives each its storage
};

struct ParameterOptions {
  ParameterInit init = ParameterInit::kRandom;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

// A parameter of `shape` as `options` says (kRandom allocates; the values come from the caller).
// A hollow one has zero bytes of storage (reading it is invalid until storage is set) that keeps
// the device's allocator, so memory can be given to it in place later.
at::Tensor make_parameter(at::IntArrayRef shape, const ParameterOptions& options);

// y = x W^T, W (out, in). No bias: LLaMA has none.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, const ParameterOptions& options);
  // x (..., in) -> (..., out)
  at::Tensor forward(const at::Tensor& x);

  at::Tensor weight;
};
TORCH_MODULE(Linear);

// Token ids -> rows of W (vocab, dim).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t dim, const ParameterOptions& options);
  // tokens (...) int64 -> (..., dim)
  at::Tensor forward(const at::Tensor& tokens);

  at::Tensor weight;
};
TORCH_MODULE(Embedding);

}  // namespace longtune::model
