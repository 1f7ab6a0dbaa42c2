// How the trainer holds the parameters it optimizes, kept apart from the model so that sharding
// slots in from outside: the optimizer only ever sees "master" tensors with gradients, and the
// model only ever sees its own compute-dtype parameters. LocalParameters is the single-process
// form (whole tensors): fp32 trains the model's fp32 parameters directly; bf16_mixed keeps fp32
// masters beside a bf16 model and moves gradients/weights between them; bf16 trains the bf16
// parameters directly. FSDP (trainer/fsdp) implements the same interface with flat local shards.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "model/llama.h"
#include "config/job_config.h"

namespace longtune::trainer {
class AdamW;
class CheckpointReader;
class CheckpointWriter;
}  // namespace longtune::trainer

namespace longtune::dist {

class TrainingParameters {
 public:
  virtual ~TrainingParameters() = default;
  // The tensors AdamW updates, by name; their .grad() is valid after finish_backward().
  virtual const std::vector<std::pair<std::string, at::Tensor>>& master() const = 0;
  // Clears the model's and the masters' gradients before a step's first micro-batch.
  virtual void zero_grad() = 0;
  // Before each micro-batch's forward: whether it is the step's last (when deferred gradient
  // reductions must happen).
  virtual void begin_micro_batch(bool last) {}
  // After the last micro-batch's backward: make master gradients hold the step's gradient
  // (a dtype cast locally; a reduce-scatter across ranks under FSDP).
  virtual void finish_backward() = 0;
  // After the optimizer step: bring the model's compute parameters up to date with the masters.
  virtual void finish_step() = 0;
  // Sums a per-rank partial squared gradient norm across ranks (identity on one process).
  virtual std::function<void(at::Tensor&)> grad_norm_reduction() const { return {}; }
  // Full (unsharded) master values by name, for checkpoints and export; and their inverse.
  virtual std::vector<std::pair<std::string, at::Tensor>> full_state() const = 0;
  virtual void load_full_state(const std::function<at::Tensor(const std::string&)>& get_tensor) = 0;
  // This rank's share of the masters and of `optimizer`'s state, into a checkpoint, and back from a
  // checkpoint of any layout and world size (trainer/sharded_checkpoint).
  virtual void save_state(trainer::CheckpointWriter& writer, const trainer::AdamW& optimizer) const = 0;
  virtual void load_state(const trainer::CheckpointReader& reader, trainer::AdamW& optimizer) = 0;
};

class LocalParameters final : public TrainingParameters {
 public:
  // `model` must already be in its compute dtype (fp32 for fp32, bf16 for bf16_mixed/bf16).
  LocalParameters(model::LlamaImpl& model, config::Precision precision);

  const std::vector<std::pair<std::string, at::Tensor>>& master() const override { return master_; }
  void zero_grad() override;
  void finish_backward() override;
  void finish_step() override;
  std::vector<std::pair<std::string, at::Tensor>> full_state() const override { return master_; }
  void load_full_state(const std::function<at::Tensor(const std::string&)>& get_tensor) override;
  void save_state(trainer::CheckpointWriter& writer, const trainer::AdamW& optimizer) const override;
  void load_state(const trainer::CheckpointReader& reader, trainer::AdamW& optimizer) override;

 private:
  model::LlamaImpl& model_;
  std::vector<std::pair<std::string, at::Tensor>> model_params_;  // the model's own parameters
  std::vector<std::pair<std::string, at::Tensor>> master_;        // same tensors unless bf16_mixed
  bool separate_master_;
};

// The dtype the model computes in under `precision`.
at::ScalarType compute_dtype(config::Precision precision);

}  // namespace longtune::dist
