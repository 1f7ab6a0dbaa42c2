// AdamW (fused ATen kernel or the per-tensor spelling of torch.optim.AdamW(foreach=False)), the
// learning-rate schedule and global gradient-norm clipping. See optimizer.h for the contract; the
// comments here say where and why the arithmetic follows PyTorch's.
#include "trainer/optimizer.h"

#include <ATen/TensorOperators.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/clamp.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include <fmt/format.h>

#include "common/check.h"

namespace longtune::trainer {

namespace {

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

// Loads one saved state tensor into `target` (same shape and dtype required; copied bit for bit
// onto target's device).
void load_into(at::Tensor& target, const std::string& name, const at::Tensor& saved) {
  LT_CHECK(saved.defined(), "optimizer state: {} is missing", name);
  LT_CHECK(saved.sizes() == target.sizes(), "optimizer state: {} has shape {}, expected {}", name,
           shape_string(saved.sizes()), shape_string(target.sizes()));
  LT_CHECK(saved.scalar_type() == target.scalar_type(), "optimizer state: {} has dtype {}, expected {}",
           name, c10::toString(saved.scalar_type()), c10::toString(target.scalar_type()));
  target.copy_(saved);
}

}  // namespace

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, const config::OptimSection& options)
    : params_(std::move(params)), options_(options) {
  exp_avg_.reserve(params_.size());
  exp_avg_sq_.reserve(params_.size());
  state_steps_.reserve(params_.size());
  for (const auto& [name, param] : params_) {
    LT_CHECK(param.defined(), "AdamW: parameter '{}' is undefined", name);
    LT_CHECK(at::isFloatingType(param.scalar_type()), "AdamW: parameter '{}' has non-floating dtype {}", name,
             c10::toString(param.scalar_type()));
    exp_avg_.push_back(at::zeros_like(param));
    exp_avg_sq_.push_back(at::zeros_like(param));
    // As torch.optim: the fused kernel reads the step from the parameter's device; the per-tensor
    // path reads it on the host (a CPU scalar, so .item() never syncs a GPU).
    const at::Device step_device = options_.fused ? param.device() : at::Device(at::kCPU);
    state_steps_.push_back(at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(step_device)));
  }
}

void AdamW::step(double lr) {
  at::AutoGradMode no_grad(false);
  ++steps_;
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  const double eps = options_.eps, weight_decay = options_.weight_decay;

  if (options_.fused) {
    // One kernel launch per (device, dtype) group, as torch.optim's _fused_adamw does.
    struct Group {
      at::Device device;
      at::ScalarType dtype;
      std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    };
    std::vector<Group> groups;
    for (const auto i : c10::irange(params_.size())) {
      const std::string& name = params_[i].first;
      const at::Tensor& param = params_[i].second;  // not a structured binding: the lambda below captures it
      const at::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      LT_CHECK(grad.scalar_type() == param.scalar_type() && grad.device() == param.device(),
               "AdamW: gradient of '{}' is {} on {}, the parameter {} on {}", name,
               c10::toString(grad.scalar_type()), grad.device().str(), c10::toString(param.scalar_type()),
               param.device().str());
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
        return g.device == param.device() && g.dtype == param.scalar_type();
      });
      if (it == groups.end()) it = groups.insert(groups.end(), Group{param.device(), param.scalar_type(), {}, {}, {}, {}, {}});
      it->params.push_back(param);
      it->grads.push_back(grad);
      it->exp_avgs.push_back(exp_avg_[i]);
      it->exp_avg_sqs.push_back(exp_avg_sq_[i]);
      it->steps.push_back(state_steps_[i]);
    }
    for (auto& g : groups) {
      at::_foreach_add_(g.steps, 1);
      at::_fused_adamw_(g.params, g.grads, g.exp_avgs, g.exp_avg_sqs, /*max_exp_avg_sqs=*/{}, g.steps, lr, beta1,
                        beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
    }
    return;
  }

  // torch.optim.adam._single_tensor_adam with decoupled weight decay, op for op.
  for (const auto i : c10::irange(params_.size())) {
    at::Tensor param = params_[i].second;
    const at::Tensor& grad = param.grad();
    if (!grad.defined()) continue;
    at::Tensor& exp_avg = exp_avg_[i];
    at::Tensor& exp_avg_sq = exp_avg_sq_[i];
    state_steps_[i].add_(1);
    if (weight_decay != 0) param.mul_(1 - lr * weight_decay);
    exp_avg.lerp_(grad, 1 - beta1);
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    const double step = state_steps_[i].item<float>();
    const double bias_correction1 = 1 - std::pow(beta1, step);
    const double bias_correction2 = 1 - std::pow(beta2, step);
    const double step_size = lr / bias_correction1;
    const at::Tensor denom = (exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(eps);
    param.addcdiv_(exp_avg, denom, -step_size);
  }
}

std::string to_string(Moment moment) { return moment == Moment::kExpAvg ? "exp_avg" : "exp_avg_sq"; }

const at::Tensor& AdamW::moment(Moment which, size_t param) const {
  LT_CHECK(param < params_.size(), "AdamW: no parameter {} (it has {})", param, params_.size());
  return which == Moment::kExpAvg ? exp_avg_[param] : exp_avg_sq_[param];
}

at::Tensor AdamW::step_count() const { return at::scalar_tensor(static_cast<double>(steps_), at::kFloat); }

void AdamW::load_state(const at::Tensor& step, const std::function<at::Tensor(Moment, size_t param)>& get) {
  at::AutoGradMode no_grad(false);
  LT_CHECK(step.defined(), "optimizer state: tensor 'step' is missing");
  LT_CHECK(step.numel() == 1 && step.scalar_type() == at::kFloat,
           "optimizer state: tensor 'step' must be one float32 value, got {} of shape {}",
           c10::toString(step.scalar_type()), shape_string(step.sizes()));
  const float step_value = step.item<float>();
  LT_CHECK(step_value >= 0 && step_value == std::floor(step_value) && step_value < (1 << 24),
           "optimizer state: tensor 'step' holds {}, not a step count", step_value);
  for (const auto i : c10::irange(params_.size()))
    for (const Moment which : kMoments)
      load_into(which == Moment::kExpAvg ? exp_avg_[i] : exp_avg_sq_[i],
                fmt::format("{} of '{}'", to_string(which), params_[i].first), get(which, i));
  // One count for every parameter: they all step together unless a gradient was undefined,
  // which the trainer never produces.
  for (auto& s : state_steps_) s.fill_(step_value);
  steps_ = static_cast<int64_t>(step_value);
}

double learning_rate(const config::ScheduleSection& schedule, double peak_lr, int64_t step, int64_t total_steps) {
  LT_CHECK(step >= 0 && total_steps > 0, "learning_rate: step {} of total {} is out of range", step,
           total_steps);
  const int64_t warmup = schedule.warmup_steps;
  if (warmup > 0 && step < warmup) {
    // torch.optim.lr_scheduler.LinearLR(start_factor, end_factor=1, total_iters=warmup), closed form.
    const double start = schedule.warmup_start_factor;
    return peak_lr * (start + (1.0 - start) * static_cast<double>(step) / static_cast<double>(warmup));
  }
  if (schedule.decay == config::LrDecay::kConstant) return peak_lr;
  // Fraction of the decay done: 0 at the end of warmup, 1 at the last step (total_steps - 1).
  const int64_t decay_steps = total_steps - 1 - warmup;
  const double t = decay_steps <= 0 ? (step > warmup ? 1.0 : 0.0)
                                    : std::clamp(static_cast<double>(step - warmup) / decay_steps, 0.0, 1.0);
  const double min_factor = schedule.min_lr_factor;
  const double shape = schedule.decay == config::LrDecay::kCosine ? 0.5 * (1.0 + std::cos(std::numbers::pi * t)) : 1.0 - t;
  return peak_lr * (min_factor + (1.0 - min_factor) * shape);
}

double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      const std::function<void(at::Tensor&)>& all_reduce_sum) {
  at::AutoGradMode no_grad(false);
  std::vector<at::Tensor> defined;
  defined.reserve(grads.size());
  for (const auto& g : grads)
    if (g.defined()) defined.push_back(g);
  if (defined.empty() && !all_reduce_sum) return 0.0;

  // Per-tensor norms accumulated and returned in fp32 (bf16 grads included), then the squared sum,
  // which is what adds across ranks.
  at::Tensor squared_sum;
  if (defined.empty()) {
    squared_sum = at::zeros({}, at::kFloat);  // a rank without gradients still joins the reduction
  } else {
    std::vector<at::Tensor> norms = at::_foreach_norm(defined, 2, at::kFloat);
    const at::Device first = norms.front().device();
    for (auto& n : norms)
      if (n.device() != first) n = n.to(first);
    squared_sum = at::stack(norms).pow(2).sum();
  }
  if (all_reduce_sum) all_reduce_sum(squared_sum);
  const at::Tensor norm = squared_sum.sqrt();
  const double total_norm = norm.item<double>();
  if (!std::isfinite(total_norm) || max_norm <= 0 || defined.empty()) return total_norm;

  // torch.nn.utils.clip_grad_norm_ multiplies by clamp(max_norm / (norm + 1e-6), max=1) computed as
  // fp32 tensor ops (scalar / tensor is reciprocal() * scalar); the same ops keep the scaled grads
  // bitwise equal to its result for an equal norm. Skipping the multiply by 1 changes nothing.
  if (max_norm / (total_norm + 1e-6) >= 1.0) return total_norm;
  const at::Tensor coef = at::clamp(max_norm / (norm + 1e-6), std::nullopt, 1.0);
  // _foreach_mul_ wants the scalar tensor on the grads' device (one group per device).
  std::vector<std::vector<at::Tensor>> by_device;
  for (const auto& g : defined) {
    auto it = std::find_if(by_device.begin(), by_device.end(),
                           [&](const auto& list) { return list.front().device() == g.device(); });
    if (it == by_device.end()) it = by_device.insert(by_device.end(), std::vector<at::Tensor>{});
    it->push_back(g);
  }
  for (auto& list : by_device) at::_foreach_mul_(list, coef.to(list.front().device()));
  return total_norm;
}

}  // namespace longtune::trainer
