// The training loop of a job: PI fine-tuning (or pretraining from a preset) of one LLaMA model on
// prepared token data: it builds the run (data, model, parameters, optimizer, run directory),
// resumes, then repeats trainer/train_step with the schedule's learning rate, applies the NaN
// policy, validates periodically, writes metrics, and saves atomic checkpoints
// (trainer/training_state). Under a launcher every rank runs one Trainer: the process group comes
// from the environment (dist/dist_env), the global batch is split over ranks, and the parameters
// are sharded from outside the model (dist/fsdp behind dist::TrainingParameters). Not the CLI and
// not the model.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "config/job_config.h"
#include "dist/dist_env.h"

namespace longtune {
class ProgressLine;
}

namespace longtune::trainer {

class StepProbe;
struct StepResult;

enum class RunOutcome { kCompleted, kPreempted };

// One validation figure. Sliding protocol: ppl is the paper's exp(mean of window mean NLL) at
// `window` and loss its log; packed: the mean NLL per token over packed sequences at data.seq_len.
struct EvalResult {
  double loss = 0;
  double ppl = 0;
  int64_t tokens = 0;   // tokens scored
  int64_t window = 0;   // context window
};

// Process-wide LibTorch settings a job asks for (intra-op threads, deterministic kernels); the
// caller applies them once, before building a Trainer.
void apply_torch_settings(const config::TrainSection& train);

class Trainer {
 public:
  // Builds model, data, optimizer and run directory from a validated config, and resumes per
  // checkpoint.resume. `dist` says where this process sits (read once, by the caller); a launched
  // process (any world size) joins the process group and shards per parallel.sharding. `probe`
  // (tests only) observes every step. Throws longtune::Error on anything unusable.
  explicit Trainer(const config::JobConfig& config, const dist::DistEnv& dist = dist::DistEnv{},
                   StepProbe* probe = nullptr);
  ~Trainer();

  // Trains until train.steps (kCompleted) or a stop signal (kPreempted, after saving).
  RunOutcome train();
  // The validation per eval.protocol: one result per eval window (sliding) or one at data.seq_len
  // (packed); none without data.validation. Collective: every rank calls it.
  std::vector<EvalResult> evaluate();
  // Saves a checkpoint of this step (asynchronously with checkpoint.async_save: returns once the
  // state is snapshotted). Collective: every rank calls it.
  void save_checkpoint();
  // Returns when the last save is complete on disk; rethrows a failed asynchronous save's error.
  void wait_for_checkpoint();
  // The checkpoint of the last save (complete once train() returned), or the one resumed from;
  // empty if neither.
  const std::filesystem::path& last_checkpoint() const;

  int64_t step() const;
  const c10::Device& device() const;

 private:
  // After a step: its metrics record, a validation pass when one is due, the progress line.
  void report_step(const StepResult& step, double tokens_per_s, ProgressLine& progress);
  EvalResult evaluate_packed();
  std::vector<EvalResult> evaluate_sliding();

  struct Run;
  std::unique_ptr<Run> run_;
};

}  // namespace longtune::trainer
