#include "trainer/train_step.h"

#include <ATen/ATen.h>

#include <cmath>

#include "common/check.h"
#include "dist/process_group.h"
#include "dist/training_parameters.h"
#include "model/llama.h"
#include "trainer/optimizer.h"

namespace longtune::trainer {

StepResult train_step(model::LlamaImpl& model, dist::TrainingParameters& parameters, AdamW& optimizer,
                      const std::vector<at::Tensor>& micro_batches, const StepOptions& options) {
  LT_CHECK(!micro_batches.empty() && options.global_tokens > 0, "train_step: no micro-batches or tokens");
  StepResult result;
  result.lr = options.lr;
  parameters.zero_grad();
  const c10::Device device = micro_batches.front().device();
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  for (size_t micro = 0; micro < micro_batches.size(); ++micro) {
    parameters.begin_micro_batch(micro + 1 == micro_batches.size());
    const at::Tensor& sequences = micro_batches[micro];  // (B, T+1)
    const int64_t seq_len = sequences.size(1) - 1;
    at::Tensor nll =
        model.token_nll(sequences.slice(1, 0, seq_len), sequences.slice(1, 1), options.loss_chunk_rows).sum();
    if (options.probe != nullptr) options.probe->on_loss(options.step, nll);
    (nll / options.global_tokens).backward();
    loss_sum += nll.detach().to(at::kDouble);
  }
  parameters.finish_backward();
  if (options.probe != nullptr) options.probe->after_backward(parameters);
  std::vector<at::Tensor> grads;
  for (const auto& [name, param] : parameters.master())
    if (param.grad().defined()) grads.push_back(param.grad());
  double loss = loss_sum.item<double>();
  if (options.group != nullptr) loss = dist::all_reduce_sum(*options.group, loss, device);
  result.loss = loss / options.global_tokens;
  result.grad_norm = clip_grad_norm(grads, options.grad_clip, parameters.grad_norm_reduction());
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    result.skipped = true;
    parameters.zero_grad();
    return result;
  }
  optimizer.step(options.lr);
  parameters.finish_step();
  return result;
}

}  // namespace longtune::trainer
