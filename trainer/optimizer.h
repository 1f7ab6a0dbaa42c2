// AdamW over the fp32 master parameters the trainer hands in (whole tensors on one process, or
// the local flat shards under FSDP: the optimizer does not know which), plus the learning-rate
// schedule and global gradient-norm clipping. The fused path is ATen's _fused_adamw_ kernel (CPU
// and CUDA, one call per device/dtype group); the unfused path spells out the same update with
// per-tensor ops, as torch.optim.AdamW(foreach=False) does. Not the choice of parameters, nor
// the precision casts (the trainer's), nor any communication (clip takes a reduction hook).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "config/job_config.h"

namespace longtune::trainer {

// AdamW's two running moments of each parameter.
enum class Moment { kExpAvg, kExpAvgSq };
inline constexpr Moment kMoments[] = {Moment::kExpAvg, Moment::kExpAvgSq};
// torch.optim's names: "exp_avg", "exp_avg_sq".
std::string to_string(Moment moment);

class AdamW {
 public:
  // `params` are named leaf tensors whose .grad() the caller fills before step(). Their names key
  // the optimizer state in checkpoints.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, const config::OptimSection& options);

  // One update at learning rate `lr` from the current .grad() of every parameter (a parameter with
  // an undefined grad is skipped, as PyTorch does). Increments the step count first, as PyTorch.
  void step(double lr);
  int64_t steps_taken() const { return steps_; }

  // The state torch.optim.AdamW keeps: per parameter (in params() order) its two moments, the live
  // tensors (copy them before stepping on if you keep them), and the step count as a float32 CPU
  // scalar. Checkpoints name and lay them out (trainer/training_state); bitwise round trip through
  // load_state().
  const at::Tensor& moment(Moment which, size_t param) const;
  at::Tensor step_count() const;
  // Copies saved state (any device) into this optimizer's tensors: `step` (as step_count() gives
  // it) becomes every parameter's step count, `get(moment, i)` is parameter i's moment (undefined
  // if missing). Throws longtune::Error naming the missing tensor or a shape/dtype mismatch.
  void load_state(const at::Tensor& step, const std::function<at::Tensor(Moment, size_t param)>& get);

  const std::vector<std::pair<std::string, at::Tensor>>& params() const { return params_; }

 private:
  std::vector<std::pair<std::string, at::Tensor>> params_;
  // state_steps_: per-parameter float32 step counts as torch.optim keeps them, on the parameter's
  // device for the fused kernel, on the CPU for the per-tensor path (read there with .item()).
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_, state_steps_;
  config::OptimSection options_;
  int64_t steps_ = 0;
};

// The learning rate at optimizer step `step` (0-based) of `total_steps`: linear warmup from
// warmup_start_factor * peak at step 0 to peak at step warmup_steps (as torch LinearLR), then
// constant, cosine or linear decay to min_lr_factor * peak at the last step.
double learning_rate(const config::ScheduleSection& schedule, double peak_lr, int64_t step, int64_t total_steps);

// Global L2 norm of `grads`; `all_reduce_sum` (may be empty) sums the squared norm across ranks
// before the root. Grads are scaled by min(1, max_norm / (norm + 1e-6)) when max_norm > 0. Returns
// the norm before clipping (NaN/Inf if any gradient is non-finite; then nothing is scaled).
double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm,
                      const std::function<void(at::Tensor&)>& all_reduce_sum = {});

}  // namespace longtune::trainer
