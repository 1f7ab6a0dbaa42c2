#include "model/weight_source.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "common/check.h"
#include "model/llama.h"

namespace longtune::model {

void load_weights(LlamaImpl& model, const WeightSource& source) {
  at::NoGradGuard no_grad;
  for (auto& item : model.named_parameters()) {
    at::Tensor& param = item.value();
    LT_CHECK(param.storage().nbytes() >= static_cast<size_t>(param.numel() * param.element_size()),
             "load_weights: parameter {} has no storage (a hollow model is filled through its sharding)", item.key());
    at::Tensor flat = param.view({-1});  // (numel,)
    source.read(item.key(), 0, flat.numel(), flat);
  }
}

ModuleWeights::ModuleWeights(LlamaImpl& model) {
  // detach() aliases the current storage: a later set_data on the parameter leaves it untouched.
  for (const auto& item : model.named_parameters()) values_.emplace(item.key(), item.value().detach());
}

void ModuleWeights::read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const {
  const auto it = values_.find(name);
  LT_CHECK(it != values_.end(), "model weights: no parameter '{}'", name);
  const int64_t numel = it->second.numel();
  LT_CHECK(begin >= 0 && begin <= end && end <= numel, "model weights: range [{}, {}) is outside parameter {} of {} "
           "elements", begin, end, name, numel);
  at::NoGradGuard no_grad;
  const_cast<at::Tensor&>(out).copy_(it->second.reshape({-1}).narrow(0, begin, end - begin));
}

}  // namespace longtune::model
