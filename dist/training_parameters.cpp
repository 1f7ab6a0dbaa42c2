#include "dist/training_parameters.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include <algorithm>

#include "common/check.h"

namespace longtune::dist {

LocalParameters::LocalParameters(model::LlamaImpl& model, MixedPrecision precision)
    : layout_(flat_units(model)), separate_master_(precision.master_dtype != precision.param_dtype) {
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const at::Tensor& param = item.value();
    LT_CHECK(param.scalar_type() == precision.param_dtype, "parameter {} is {}, but the precision policy computes in {}",
             item.key(), c10::toString(param.scalar_type()), c10::toString(precision.param_dtype));
    model_params_.emplace_back(item.key(), param);
    if (separate_master_) {
      // Master copies the optimizer updates; the model is refreshed from them every step.
      master_.emplace_back(item.key(), param.detach().to(precision.master_dtype, /*non_blocking=*/false, /*copy=*/true));
    } else {
      master_.emplace_back(item.key(), param);
    }
  }
}

void LocalParameters::zero_grad() {
  for (auto& [name, param] : model_params_) param.mutable_grad() = at::Tensor();
  if (separate_master_)
    for (auto& [name, param] : master_) param.mutable_grad() = at::Tensor();
}

void LocalParameters::finish_backward() {
  if (!separate_master_) return;
  for (size_t i = 0; i < master_.size(); ++i) {
    const at::Tensor& grad = model_params_[i].second.grad();
    if (grad.defined()) master_[i].second.mutable_grad() = grad.to(master_[i].second.scalar_type());
  }
}

void LocalParameters::finish_step() {
  if (!separate_master_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < master_.size(); ++i) model_params_[i].second.copy_(master_[i].second);
}

void LocalParameters::load_masters(const std::function<at::Tensor(size_t index)>& value_of) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < master_.size(); ++i) {
    const auto& [name, master] = master_[i];
    const at::Tensor value = value_of(i);
    LT_CHECK(value.sizes() == master.sizes() && value.scalar_type() == master.scalar_type(),
             "checkpoint tensor {} is {} {}, but the model needs {} {}", name, c10::toString(value.scalar_type()),
             fmt::format("{}", fmt::join(value.sizes(), "x")), c10::toString(master.scalar_type()),
             fmt::format("{}", fmt::join(master.sizes(), "x")));
    const_cast<at::Tensor&>(master).copy_(value);
  }
  finish_step();
}

void load_weights(TrainingParameters& parameters, const model::WeightSource& source) {
  const MasterPlacement where = parameters.placement();
  const std::vector<std::pair<std::string, at::Tensor>>& masters = parameters.master();
  parameters.load_masters([&](size_t i) {
    const at::Tensor& master = masters[i].second;
    at::Tensor value = at::empty(master.sizes(), at::TensorOptions().dtype(master.scalar_type()));
    if (!where.unit_shards) {
      source.read(masters[i].first, 0, value.numel(), value.view({-1}));
      return value;
    }
    // This rank's piece [begin, end) of unit i's flat vector, from each parameter it overlaps;
    // zeros past the unit's end.
    const FlatUnit& unit = parameters.layout()[i];
    const int64_t begin = unit.shard_begin(where.shard, where.shards), end = unit.shard_end(where.shard, where.shards);
    value.narrow(0, end - begin, value.numel() - (end - begin)).zero_();
    for (const FlatParam& p : unit.params) {
      const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.numel);
      if (lo < hi) source.read(p.name, lo - p.offset, hi - p.offset, value.narrow(0, lo - begin, hi - lo));
    }
    return value;
  });
}

}  // namespace longtune::dist
