// How the trainer holds the parameters it optimizes, kept apart from the model so that sharding
// slots in from outside: the optimizer only ever sees "master" tensors with gradients, and the
// model only ever sees its own compute-dtype parameters. LocalParameters is the single-process
// form (whole tensors): with equal dtypes the model's parameters are the masters; with fp32
// masters beside a bf16 model (bf16_mixed) gradients and weights move between them. FSDP
// (dist/fsdp) implements the same interface with one flat local shard per unit. Parameters say
// where their masters sit in the model's flat layout; what a checkpoint makes of that is
// trainer/training_state's business, not theirs.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "dist/flat_layout.h"
#include "model/llama.h"
#include "model/weight_source.h"

namespace longtune::dist {

// The dtypes of a precision policy (as FSDP2's MixedPrecisionPolicy names them).
struct MixedPrecision {
  at::ScalarType param_dtype = at::kFloat;   // what the model computes in
  at::ScalarType master_dtype = at::kFloat;  // what the optimizer steps on
};

// Where master() sits in the model's flat layout (dist/flat_layout).
struct MasterPlacement {
  // false: master() holds whole parameters, by parameter name (LocalParameters). true: master()[u]
  // is this rank's flat shard of unit u, by unit name (ShardedParameters).
  bool unit_shards = false;
  int shard = 0;        // unit_shards: which of `shards` consecutive pieces of each unit this rank holds
  int shards = 1;       // unit_shards: pieces per unit (1 when every rank holds everything)
  // Ranks hold different shards (full_shard, shard_grad_op), so each saves its own; otherwise every
  // rank holds the same values and one saves them for all.
  bool distinct = false;
};

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

  // The model's units and where master() sits in them.
  virtual const std::vector<FlatUnit>& layout() const = 0;
  virtual MasterPlacement placement() const = 0;
  // Full (unsharded) master values by parameter name; a collective under sharding.
  virtual std::vector<std::pair<std::string, at::Tensor>> full_state() const = 0;
  // Overwrites every master: value(i) is master()[i]'s new value (its shape; copied as is, so the
  // dtype must be the master's), then refreshes the model's parameters as finish_step() does.
  virtual void load_masters(const std::function<at::Tensor(size_t index)>& value) = 0;
};

// Fills every master from `source` (this rank's range of each unit when sharded, each whole
// parameter otherwise), converting from the source's dtype straight into the master dtype, and
// refreshes the model's parameters. Holds one unit's shard (or one parameter) at a time.
void load_weights(TrainingParameters& parameters, const model::WeightSource& source);

class LocalParameters final : public TrainingParameters {
 public:
  // `model` must already be in precision.param_dtype, with storage (kRandom or kEmpty). Separate
  // masters start as copies of the model's values; load_weights or load_masters replaces them.
  LocalParameters(model::LlamaImpl& model, MixedPrecision precision);

  const std::vector<std::pair<std::string, at::Tensor>>& master() const override { return master_; }
  void zero_grad() override;
  void finish_backward() override;
  void finish_step() override;
  const std::vector<FlatUnit>& layout() const override { return layout_; }
  MasterPlacement placement() const override { return {}; }
  std::vector<std::pair<std::string, at::Tensor>> full_state() const override { return master_; }
  void load_masters(const std::function<at::Tensor(size_t index)>& value) override;

 private:
  std::vector<FlatUnit> layout_;
  std::vector<std::pair<std::string, at::Tensor>> model_params_;  // the model's own parameters
  std::vector<std::pair<std::string, at::Tensor>> master_;        // same tensors unless dtypes differ
  bool separate_master_;
};

}  // namespace longtune::dist
