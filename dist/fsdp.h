// FSDP-style sharding of a model's parameters, gradients and optimizer state over the ranks of a
// process group, applied from outside the model through its UnitHooks. Each unit (the embedding,
// every decoder layer, the final norm and head) is one flat vector split evenly over the ranks
// (padded, so any world size works); each rank keeps only its shard in the master dtype, which is
// what the optimizer steps on. Modes:
//   full_shard (ZeRO-3): a unit's compute-dtype parameters are all-gathered just before its forward
//     and freed after it, re-gathered for its backward, and its gradients reduce-scattered (in the
//     reduce dtype: fp32, or bf16 to halve the traffic) into the owning shards as soon as they are
//     complete, where micro-batches accumulate in the master dtype;
//   shard_grad_op (ZeRO-2): as full_shard, but gathered parameters stay from forward to backward;
//   no_shard (DDP-like): every rank holds everything; gradients are all-reduced once per step.
// The next units' all-gathers are prefetched while the current one computes, and reductions run on
// the process group's stream; on GPU neither blocks the host. The model's parameters become views
// into per-unit flat buffers.
// Not the optimizer, not the checkpoint format (trainer/training_state) and not the process group.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/llama.h"
#include "dist/flat_layout.h"
#include "dist/process_group.h"
#include "dist/training_parameters.h"

namespace longtune::dist {

// The modes above, as torch.distributed.fsdp.ShardingStrategy names them.
enum class ShardingStrategy { kFullShard, kShardGradOp, kNoShard };

// How the sharding schedules its collectives.
struct ShardingOptions {
  int prefetch_depth = 0;           // units ahead whose all-gather is issued before they run (0: none)
  size_t reductions_in_flight = 2;  // gradient reductions outstanding at most (>= 1)
  // The dtype gradients are summed over ranks in: fp32, or bf16 (half the bytes, ~3 significant
  // digits per partial sum). Either way the sum is accumulated into the master-dtype gradient.
  at::ScalarType reduce_dtype = at::kFloat;
};

struct ShardedMemory {
  int64_t master_bytes = 0;          // this rank's master shards
  int64_t grad_bytes = 0;            // this rank's sharded gradients
  int64_t gathered_bytes = 0;        // unit buffers gathered right now
  int64_t peak_gathered_bytes = 0;   // the most gathered at once since construction / reset_peak()
  int64_t largest_unit_bytes = 0;    // one gathered unit, in the compute dtype
};

class ShardedParameters final : public TrainingParameters, private model::UnitHooks {
 public:
  // `model`'s parameters must be in the compute dtype; their values are not read, so the model is
  // best built hollow (model::ParameterInit::kHollow: no memory at all). They become views of the
  // unit buffers on `device`, and the masters start at zero: fill them with dist::load_weights
  // (each rank reads only its shard) or load_masters (a checkpoint) before the first step.
  ShardedParameters(model::LlamaImpl& model, MixedPrecision precision, ShardingStrategy mode, ProcessGroup& group,
                    const c10::Device& device, const ShardingOptions& options = {});
  ~ShardedParameters() override;

  const std::vector<std::pair<std::string, at::Tensor>>& master() const override { return master_; }
  void zero_grad() override;
  void begin_micro_batch(bool last) override { last_micro_batch_ = last; }
  void finish_backward() override;
  void finish_step() override;
  std::function<void(at::Tensor&)> grad_norm_reduction() const override;
  const std::vector<FlatUnit>& layout() const override { return layout_; }
  MasterPlacement placement() const override;
  std::vector<std::pair<std::string, at::Tensor>> full_state() const override;
  void load_masters(const std::function<at::Tensor(size_t index)>& value) override;

  ShardedMemory memory() const;
  void reset_peak() { peak_gathered_bytes_ = gathered_bytes_; }

 private:
  struct Unit;
  void before_unit(int64_t unit) override;
  at::Tensor after_unit(int64_t unit, const at::Tensor& output) override;
  void start_gather(Unit& unit);
  void prefetch(int64_t from, int64_t step);
  void gather(Unit& unit);
  void release(Unit& unit);
  void pre_backward(int64_t unit);
  void on_gradient_ready(int64_t unit);
  void reduce_gradients(Unit& unit);
  bool sharded() const { return mode_ != ShardingStrategy::kNoShard; }

  model::LlamaImpl& model_;
  ShardingStrategy mode_;
  ProcessGroup& group_;
  ShardingOptions options_;
  bool tied_;
  int world_;  // ranks a unit is split over (1 under no_shard)
  at::ScalarType compute_dtype_, master_dtype_;
  std::vector<FlatUnit> layout_;
  std::vector<std::unique_ptr<Unit>> units_;
  std::vector<std::pair<std::string, at::Tensor>> master_;
  std::deque<std::function<void()>> reductions_;  // in flight, in issue order
  bool last_micro_batch_ = true;
  int64_t gathered_bytes_ = 0, peak_gathered_bytes_ = 0;
};

}  // namespace longtune::dist
