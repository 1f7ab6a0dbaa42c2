#include "model/layers.h"

#include <ATen/ATen.h>

namespace longtune::model {

at::Tensor make_parameter(at::IntArrayRef shape, const ParameterOptions& options) {
  const at::TensorOptions tensor_options = at::TensorOptions().dtype(options.dtype).device(options.device);
  if (options.init != ParameterInit::kHollow) return at::empty(shape, tensor_options);
  at::Tensor hollow = at::empty({0}, tensor_options);
  hollow.unsafeGetTensorImpl()->set_sizes_contiguous(shape);
  return hollow;
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, const ParameterOptions& options) {
  weight = register_parameter("weight", make_parameter({out_features, in_features}, options));
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return at::linear(x, weight); }

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t dim, const ParameterOptions& options) {
  weight = register_parameter("weight", make_parameter({num_embeddings, dim}, options));
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& tokens) { return at::embedding(weight, tokens); }

}  // namespace longtune::model
