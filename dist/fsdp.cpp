#include "dist/fsdp.h"

#include <ATen/ATen.h>
#include <c10/core/StorageImpl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/variable.h>

#include <map>

#include "common/check.h"

namespace longtune::dist {

namespace {

// A gathered unit's memory is returned to the allocator by emptying the storage its parameter views
// share, and brought back into the same storage, so autograd's saved references to those views stay
// valid across a free/re-gather (FSDP's flat-parameter technique).
void release_storage(const at::Tensor& tensor) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(at::DataPtr(nullptr, tensor.device()));
  storage->set_nbytes(0);
}

void allocate_storage(const at::Tensor& tensor, size_t nbytes) {
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  storage->set_data_ptr_noswap(storage->allocator()->allocate(nbytes));
  storage->set_nbytes(nbytes);
}

class GradientReadyHook final : public torch::autograd::PostAccumulateGradHook {
 public:
  explicit GradientReadyHook(std::function<void()> fn) : fn_(std::move(fn)) {}
  void operator()(const torch::autograd::Variable&) override { fn_(); }

 private:
  std::function<void()> fn_;
};

}  // namespace

struct ShardedParameters::Unit {
  int64_t index = 0;
  std::vector<at::Tensor> params;  // the model's parameters, views into `full`
  int64_t shard = 0;               // elements per rank
  int64_t padded = 0;              // shard * ranks
  int64_t full_bytes = 0;
  at::Tensor master;               // (shard,) this rank's master values; the optimizer's tensor
  at::Tensor full;                 // (padded,) compute dtype; storage empty unless gathered
  bool gathered = false;
  PendingCollective gathering;     // an all-gather into `full` in flight
  int64_t grads_ready = 0;         // parameters whose gradient is complete in this backward
  bool reduced = false;            // this micro-batch's gradient has been handed to a reduction
};

ShardedParameters::ShardedParameters(model::LlamaImpl& model, MixedPrecision precision, ShardingStrategy mode,
                                     ProcessGroup& group, const c10::Device& device, const ShardingOptions& options)
    : model_(model),
      mode_(mode),
      group_(group),
      options_(options),
      tied_(model.config().tie_word_embeddings),
      world_(mode == ShardingStrategy::kNoShard ? 1 : group.world_size()),
      compute_dtype_(precision.param_dtype),
      master_dtype_(precision.master_dtype),
      layout_(flat_units(model)) {
  LT_CHECK(options.prefetch_depth >= 0, "sharding: prefetch depth must be >= 0, got {}", options.prefetch_depth);
  LT_CHECK(options.reductions_in_flight >= 1, "sharding: at least one gradient reduction must be allowed in flight");
  LT_CHECK(options.reduce_dtype == at::kFloat || options.reduce_dtype == at::kBFloat16,
           "sharding: gradients are reduced in float32 or bfloat16, not {}", c10::toString(options.reduce_dtype));
  torch::NoGradGuard no_grad;
  // Only names, shapes and dtypes of the model's parameters are used: their values (if they have
  // any; a hollow model has none) are dropped, and load_weights / load_masters fills the masters.
  std::map<std::string, at::Tensor> by_name;
  for (const auto& item : model.named_parameters()) {
    LT_CHECK(item.value().scalar_type() == compute_dtype_, "parameter {} is {}, but the precision policy computes in {}",
             item.key(), c10::toString(item.value().scalar_type()), c10::toString(compute_dtype_));
    by_name.emplace(item.key(), item.value());
  }
  for (size_t u = 0; u < layout_.size(); ++u) {
    const FlatUnit& flat = layout_[u];
    auto unit = std::make_unique<Unit>();
    unit->index = static_cast<int64_t>(u);
    unit->shard = flat.shard_numel(world_);
    unit->padded = unit->shard * world_;
    // (padded,) in the compute dtype. Its memory is never touched here: the views are cut while it
    // exists (narrow checks the storage's bounds), then it is released until gathered.
    unit->full = at::empty({unit->padded}, at::TensorOptions().dtype(compute_dtype_).device(device));
    unit->full_bytes = unit->padded * unit->full.element_size();
    for (const FlatParam& p : flat.params) {
      at::Tensor param = by_name.at(p.name);
      param.set_data(unit->full.narrow(0, p.offset, p.numel).view(p.shape));
      unit->params.push_back(param);
      const int64_t index = unit->index;
      torch::autograd::impl::set_post_acc_grad_hooks(
          param, std::make_unique<GradientReadyHook>([this, index] { on_gradient_ready(index); }));
    }
    unit->master = at::zeros({unit->shard}, at::TensorOptions().dtype(master_dtype_).device(device));
    unit->master.requires_grad_(true);
    master_.emplace_back(flat.name, unit->master);
    if (sharded()) {
      release_storage(unit->full);
    } else {
      // No-shard keeps every unit gathered; load_masters fills it.
      unit->gathered = true;
      gathered_bytes_ += unit->full_bytes;
    }
    units_.push_back(std::move(unit));
  }
  peak_gathered_bytes_ = gathered_bytes_;
  model_.set_unit_hooks(this);
}

ShardedParameters::~ShardedParameters() {
  model_.set_unit_hooks(nullptr);
  for (auto& unit : units_)
    for (const at::Tensor& param : unit->params) torch::autograd::impl::set_post_acc_grad_hooks(param, nullptr);
}

// ---- gathering ----

void ShardedParameters::start_gather(Unit& unit) {
  if (unit.gathered || unit.gathering.pending()) return;
  allocate_storage(unit.full, static_cast<size_t>(unit.full_bytes));
  gathered_bytes_ += unit.full_bytes;
  peak_gathered_bytes_ = std::max(peak_gathered_bytes_, gathered_bytes_);
  const at::Tensor source = unit.master.detach().to(compute_dtype_);
  unit.gathering = group_.all_gather(unit.full, source);
}

// Issues the all-gathers of the prefetch_depth units after `from` in the direction `step` (+1 in
// forward, -1 in backward). Every rank runs the same schedule, so collectives stay in one order.
void ShardedParameters::prefetch(int64_t from, int64_t step) {
  const int64_t units = static_cast<int64_t>(units_.size());
  for (int64_t k = 1; k <= options_.prefetch_depth; ++k) {
    const int64_t next = from + step * k;
    if (next < 0 || next >= units) break;
    start_gather(*units_[next]);
  }
}

void ShardedParameters::gather(Unit& unit) {
  if (unit.gathered) return;
  start_gather(unit);
  unit.gathering.wait();
  unit.gathered = true;
}

void ShardedParameters::release(Unit& unit) {
  if (!sharded() || !unit.gathered) return;
  release_storage(unit.full);
  unit.gathered = false;
  gathered_bytes_ -= unit.full_bytes;
}

void ShardedParameters::before_unit(int64_t index) {
  if (!sharded()) return;
  const int64_t head = static_cast<int64_t>(units_.size()) - 1;
  gather(*units_[index]);
  if (tied_ && index == head) gather(*units_[0]);  // the head's matrix is the embedding's
  // The next units' all-gathers travel while this unit computes.
  prefetch(index, +1);
}

at::Tensor ShardedParameters::after_unit(int64_t index, const at::Tensor& output) {
  const int64_t head = static_cast<int64_t>(units_.size()) - 1;
  const bool training = at::GradMode::is_enabled() && output.requires_grad();
  if (training) {
    // The gradient of a unit's output arrives just before the unit's own backward runs.
    output.register_hook([this, index](const at::Tensor&) { pre_backward(index); });
  }
  if (!sharded()) return output;
  if (training) {
    const bool keep = mode_ == ShardingStrategy::kShardGradOp || index == head || (tied_ && index == 0);
    if (!keep) release(*units_[index]);
  } else {
    if (!(tied_ && index == 0)) release(*units_[index]);
    if (tied_ && index == head) release(*units_[0]);
  }
  return output;
}

void ShardedParameters::pre_backward(int64_t index) {
  if (!sharded()) return;
  gather(*units_[index]);
  // The units before this one are the next to run backward.
  prefetch(index, -1);
}

// ---- gradients ----

void ShardedParameters::on_gradient_ready(int64_t index) {
  Unit& unit = *units_[index];
  if (++unit.grads_ready < static_cast<int64_t>(unit.params.size())) return;
  unit.grads_ready = 0;
  // The gathered weights are done with before the reduction allocates its fp32 buffer.
  if (!(tied_ && index == static_cast<int64_t>(units_.size()) - 1)) release(unit);
  reduce_gradients(unit);
}

void ShardedParameters::reduce_gradients(Unit& unit) {
  unit.reduced = true;
  // No-shard accumulates micro-batches in the parameters' own gradients and reduces once per step.
  if (!sharded() && !last_micro_batch_) return;
  torch::NoGradGuard no_grad;
  const FlatUnit& flat = layout_[unit.index];
  at::Tensor flat_grad = at::empty({unit.padded}, unit.full.options().dtype(options_.reduce_dtype));  // (padded,)
  for (size_t i = 0; i < unit.params.size(); ++i) {
    const FlatParam& p = flat.params[i];
    flat_grad.narrow(0, p.offset, p.numel).copy_(unit.params[i].grad().reshape({-1}));
    unit.params[i].mutable_grad() = at::Tensor();
  }
  if (unit.padded > flat.numel) flat_grad.narrow(0, flat.numel, unit.padded - flat.numel).zero_();
  at::Tensor master_grad = unit.master.mutable_grad();
  if (sharded()) {
    at::Tensor shard_grad = at::empty({unit.shard}, flat_grad.options());
    PendingCollective reduce = group_.reduce_scatter_sum(shard_grad, flat_grad);
    reductions_.emplace_back([reduce, shard_grad, master_grad]() mutable {
      reduce.wait();
      const_cast<at::Tensor&>(master_grad).add_(shard_grad);
    });
  } else {
    PendingCollective reduce = group_.all_reduce_sum(flat_grad);
    reductions_.emplace_back([reduce, flat_grad, master_grad]() mutable {
      reduce.wait();
      const_cast<at::Tensor&>(master_grad).add_(flat_grad);
    });
  }
  while (reductions_.size() > options_.reductions_in_flight) {
    reductions_.front()();
    reductions_.pop_front();
  }
}

void ShardedParameters::zero_grad() {
  for (auto& unit : units_) {
    for (at::Tensor& param : unit->params) param.mutable_grad() = at::Tensor();
    unit->master.mutable_grad() = at::zeros_like(unit->master, at::MemoryFormat::Contiguous);
    unit->grads_ready = 0;
    unit->reduced = false;
  }
}

void ShardedParameters::finish_backward() {
  while (!reductions_.empty()) {
    reductions_.front()();
    reductions_.pop_front();
  }
  for (auto& unit : units_) {
    LT_CHECK(unit->reduced, "sharding: unit '{}' received no gradient in this step (a parameter unused by the "
             "forward pass?)", layout_[unit->index].name);
    LT_CHECK(unit->grads_ready == 0, "sharding: unit '{}' received gradients for only {} of its {} parameters",
             layout_[unit->index].name, unit->grads_ready, unit->params.size());
    release(*unit);
  }
}

void ShardedParameters::finish_step() {
  if (sharded()) return;  // the next forward gathers from the updated shards
  torch::NoGradGuard no_grad;
  for (auto& unit : units_) unit->full.copy_(unit->master);
}

std::function<void(at::Tensor&)> ShardedParameters::grad_norm_reduction() const {
  // Sharded gradients are disjoint pieces: their squared norms add up. No-shard gradients are
  // already identical on every rank.
  if (!sharded()) return {};
  ProcessGroup* group = &group_;
  return [group](at::Tensor& squared) { group->all_reduce_sum(squared).wait(); };
}

// ---- state ----

MasterPlacement ShardedParameters::placement() const {
  MasterPlacement placement;
  placement.unit_shards = true;
  placement.shard = sharded() ? group_.rank() : 0;
  placement.shards = world_;
  placement.distinct = sharded();
  return placement;
}

std::vector<std::pair<std::string, at::Tensor>> ShardedParameters::full_state() const {
  torch::NoGradGuard no_grad;
  std::vector<std::pair<std::string, at::Tensor>> state;
  for (const auto& unit : units_) {
    at::Tensor flat = unit->master.detach();
    if (sharded()) {
      flat = at::empty({unit->padded}, unit->master.options().requires_grad(false));  // (padded,)
      group_.all_gather(flat, unit->master.detach()).wait();
    }
    for (const FlatParam& p : layout_[unit->index].params)
      state.emplace_back(p.name, flat.narrow(0, p.offset, p.numel).view(p.shape).clone());
  }
  return state;
}

void ShardedParameters::load_masters(const std::function<at::Tensor(size_t index)>& value_of) {
  torch::NoGradGuard no_grad;
  for (auto& unit : units_) {
    const at::Tensor value = value_of(static_cast<size_t>(unit->index));
    LT_CHECK(value.dim() == 1 && value.numel() == unit->shard && value.scalar_type() == master_dtype_,
             "sharding: unit '{}' needs a {} shard of {} elements, got {} of shape {}", layout_[unit->index].name,
             c10::toString(master_dtype_), unit->shard, c10::toString(value.scalar_type()),
             fmt::format("{}", fmt::join(value.sizes(), "x")));
    unit->master.copy_(value);
  }
  finish_step();
}

ShardedMemory ShardedParameters::memory() const {
  ShardedMemory memory;
  for (const auto& unit : units_) {
    memory.master_bytes += unit->master.numel() * unit->master.element_size();
    if (unit->master.grad().defined()) memory.grad_bytes += unit->master.grad().numel() * unit->master.element_size();
    memory.largest_unit_bytes = std::max(memory.largest_unit_bytes, unit->full_bytes);
  }
  memory.gathered_bytes = gathered_bytes_;
  memory.peak_gathered_bytes = peak_gathered_bytes_;
  return memory;
}

}  // namespace longtune::dist
