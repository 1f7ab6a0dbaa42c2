#include "model/rms_norm.h"

#include <ATen/ATen.h>

namespace longtune::model {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const ParameterOptions& options) : eps_(eps) {
  weight = register_parameter("weight", make_parameter({dim}, options));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  at::Tensor h = x.to(at::kFloat);
  at::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * at::rsqrt(variance + eps_);
  return weight * h.to(x.scalar_type());
}

}  // namespace longtune::model
