// The training loop of a job: PI fine-tuning (or pretraining from a preset) of one LLaMA model on
// prepared token data, with gradient accumulation, mixed precision, clipping, NaN policy,
// periodic validation, metrics, atomic checkpoints and exact resume. Under a launcher every rank
// runs one Trainer: the process group comes from the environment (trainer/dist_env), the global
// batch is split over ranks, and the parameters are sharded from outside the model
// (trainer/fsdp behind TrainingParameters). Not the CLI and not the model.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "dist/dist_env.h"
#include "config/job_config.h"

namespace longtune::trainer {

enum class RunOutcome { kCompleted, kPreempted };

struct StepResult {
  double loss = 0;       // mean NLL over every target token of the global batch
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;  // non-finite loss or gradient under nan_policy skip
};

struct EvalResult {
  double loss = 0;  // mean NLL per token
  double ppl = 0;
  int64_t tokens = 0;
};

class Trainer {
 public:
  // Builds model, data, optimizer and run directory from a validated config, and resumes per
  // checkpoint.resume. `dist` says where this process sits (read once, by the caller); a launched
  // process (any world size) joins the process group and shards per parallel.sharding. Throws
  // longtune::Error on anything unusable.
  explicit Trainer(const config::JobConfig& config, const dist::DistEnv& dist = dist::DistEnv{});
  ~Trainer();

  // Trains until train.steps (kCompleted) or a stop signal (kPreempted, after saving).
  RunOutcome train();
  StepResult train_step();
  EvalResult evaluate();
  void save_checkpoint();

  int64_t step() const;
  const c10::Device& device() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace longtune::trainer
