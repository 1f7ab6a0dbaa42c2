// One optimizer step, as a function of its inputs, so the trainer and the sharding tests run the
// same code: zero the gradients, forward and backward every micro-batch with its summed NLL divided
// by the global batch's token count (so accumulating micro-batches, on any number of ranks, gives
// exactly the gradient of the global mean), let the parameters finish their gradient reductions,
// clip by the global norm, and update unless the loss or the gradient is non-finite. Not the data
// reading, the learning-rate schedule or the NaN policy (the trainer's).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace longtune::dist {
class ProcessGroup;
class TrainingParameters;
}  // namespace longtune::dist
namespace longtune::model {
class LlamaImpl;
}

namespace longtune::trainer {

class AdamW;

// A seam for tests: observes a step and may alter its loss. Training runs pass none, so the step
// pays one null check per micro-batch for it.
class StepProbe {
 public:
  virtual ~StepProbe() = default;
  // A micro-batch's summed NLL in optimizer step `step` (1-based), before backward; may replace it
  // (e.g. poison it to drill nan_policy).
  virtual void on_loss(int64_t step, at::Tensor& nll_sum) {}
  // After the parameters' finish_backward(): master gradients hold the step's gradient, unclipped.
  virtual void after_backward(const dist::TrainingParameters& parameters) {}
};

struct StepOptions {
  int64_t step = 1;                     // which optimizer step this is (1-based), as probes see it
  double lr = 0;                        // this step's learning rate
  double grad_clip = 0;                 // max global gradient L2 norm; 0 disables
  double global_tokens = 0;             // target tokens of the whole global batch, every rank's together
  int64_t loss_chunk_rows = 1024;       // positions per chunk of the fused head + cross-entropy
  dist::ProcessGroup* group = nullptr;  // sums the loss over ranks; null on one process
  StepProbe* probe = nullptr;           // tests only
};

struct StepResult {
  double loss = 0;       // mean NLL over every target token of the global batch
  double grad_norm = 0;  // before clipping
  double lr = 0;
  bool skipped = false;  // non-finite loss or gradient: gradients dropped, no update
};

// `micro_batches`: this rank's share of the global batch, each (B, T+1) token ids on the model's
// device (inputs are the first T, targets the last T). `parameters` hold `model`'s parameters.
StepResult train_step(model::LlamaImpl& model, dist::TrainingParameters& parameters, AdamW& optimizer,
                      const std::vector<at::Tensor>& micro_batches, const StepOptions& options);

}  // namespace longtune::trainer
