#include "dist/training_parameters.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include "common/check.h"
#include "trainer/checkpoint.h"
#include "trainer/optimizer.h"
#include "trainer/sharded_checkpoint.h"

namespace longtune::dist {

at::ScalarType compute_dtype(config::Precision precision) {
  return precision == config::Precision::kFp32 ? at::kFloat : at::kBFloat16;
}

LocalParameters::LocalParameters(model::LlamaImpl& model, config::Precision precision)
    : model_(model), separate_master_(precision == config::Precision::kBf16Mixed) {
  const at::ScalarType expected = compute_dtype(precision);
  for (const auto& item : model.named_parameters(/*recurse=*/true)) {
    const at::Tensor& param = item.value();
    LT_CHECK(param.scalar_type() == expected, "parameter {} is {}, but precision {} computes in {}",
             item.key(), c10::toString(param.scalar_type()), to_string(precision), c10::toString(expected));
    model_params_.emplace_back(item.key(), param);
    if (separate_master_) {
      // fp32 copies the optimizer updates; the bf16 model is refreshed from them every step.
      master_.emplace_back(item.key(), param.detach().to(at::kFloat).clone());
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
    if (grad.defined()) master_[i].second.mutable_grad() = grad.to(at::kFloat);
  }
}

void LocalParameters::finish_step() {
  if (!separate_master_) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < master_.size(); ++i) model_params_[i].second.copy_(master_[i].second);
}

void LocalParameters::load_full_state(const std::function<at::Tensor(const std::string&)>& get_tensor) {
  torch::NoGradGuard no_grad;
  for (auto& [name, master] : master_) {
    const at::Tensor value = get_tensor(name);
    LT_CHECK(value.sizes() == master.sizes() && value.scalar_type() == master.scalar_type(),
             "checkpoint tensor {} is {} {}, but the model needs {} {}", name, c10::toString(value.scalar_type()),
             fmt::format("{}", fmt::join(value.sizes(), "x")), c10::toString(master.scalar_type()),
             fmt::format("{}", fmt::join(master.sizes(), "x")));
    master.copy_(value);
  }
  finish_step();
}

void LocalParameters::save_state(trainer::CheckpointWriter& writer, const trainer::AdamW& optimizer) const {
  writer.put_tensors("model", master_);
  writer.put_tensors("optimizer", optimizer.state());
}

void LocalParameters::load_state(const trainer::CheckpointReader& reader, trainer::AdamW& optimizer) {
  const trainer::CheckpointTensors saved(reader, flat_units(model_));
  load_full_state([&](const std::string& name) { return saved.whole("model", name); });
  optimizer.load_state([&](const std::string& name) {
    if (name == "step") return saved.optimizer_step();
    const size_t slash = name.find('/');
    return saved.whole(name.substr(0, slash), name.substr(slash + 1));
  });
}

}  // namespace longtune::dist
