#include "trainer/sharded_checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "common/check.h"
#include "trainer/checkpoint.h"

namespace longtune::trainer {

using dist::FlatParam;
using dist::FlatUnit;

CheckpointTensors::CheckpointTensors(const CheckpointReader& reader, std::vector<FlatUnit> layout,
                                     std::optional<SavedSharding> saved)
    : reader_(reader), layout_(std::move(layout)), saved_(std::move(saved)) {
  if (!saved_) return;
  const std::string& context = saved_->source;
  const std::vector<FlatUnit>& units = saved_->layout;
  LT_CHECK(units.size() == layout_.size(), "{}: {} units, but the model has {}", context, units.size(),
           layout_.size());
  for (size_t u = 0; u < units.size(); ++u) {
    const FlatUnit& a = units[u];
    const FlatUnit& b = layout_[u];
    LT_CHECK(a.name == b.name && a.numel == b.numel && a.params.size() == b.params.size(),
             "{}: unit {} is '{}' with {} elements, but the model's is '{}' with {}", context, u, a.name, a.numel,
             b.name, b.numel);
    for (size_t i = 0; i < a.params.size(); ++i)
      LT_CHECK(a.params[i].name == b.params[i].name && a.params[i].shape == b.params[i].shape,
               "{}: unit '{}' parameter {} is '{}', but the model's is '{}' (or its shape differs)", context, a.name,
               i, a.params[i].name, b.params[i].name);
  }
}

at::Tensor CheckpointTensors::flat_range(const StateFiles& kind, size_t unit_index, int64_t begin,
                                         int64_t end) const {
  LT_CHECK(unit_index < layout_.size(), "checkpoint: no unit {}", unit_index);
  const FlatUnit& unit = layout_[unit_index];
  LT_CHECK(0 <= begin && begin <= end && end <= unit.numel, "checkpoint: range [{}, {}) outside unit '{}' of {}",
           begin, end, unit.name, unit.numel);
  std::vector<at::Tensor> pieces;
  if (sharded()) {
    const int world = saved_->world_size;
    for (int r = 0; r < world; ++r) {
      const int64_t lo = std::max(begin, unit.shard_begin(r, world));
      const int64_t hi = std::min(end, unit.shard_end(r, world));
      if (lo >= hi) continue;
      const at::Tensor shard = reader_.tensor(kind.rank_part(r), kind.tensor(unit.name));
      const int64_t expected = unit.shard_end(r, world) - unit.shard_begin(r, world);
      LT_CHECK(shard.dim() == 1 && shard.numel() == expected,
               "checkpoint {}: '{}' of rank {} has {} elements, the layout says {}", reader_.directory().string(),
               kind.tensor(unit.name), r, shard.numel(), expected);
      pieces.push_back(shard.narrow(0, lo - unit.shard_begin(r, world), hi - lo));
    }
  } else {
    for (const FlatParam& p : unit.params) {
      const int64_t lo = std::max(begin, p.offset);
      const int64_t hi = std::min(end, p.offset + p.numel);
      if (lo >= hi) continue;
      const at::Tensor value = whole(kind, p.name);
      LT_CHECK(value.numel() == p.numel, "checkpoint {}: '{}' has {} elements, the model's has {}",
               reader_.directory().string(), kind.tensor(p.name), value.numel(), p.numel);
      pieces.push_back(value.reshape({-1}).narrow(0, lo - p.offset, hi - lo));
    }
  }
  if (pieces.empty()) {
    const at::Tensor probe = sharded() ? at::Tensor() : whole(kind, unit.params.front().name);
    return at::empty({0}, probe.defined() ? probe.options() : at::TensorOptions().dtype(at::kFloat));
  }
  return pieces.size() == 1 ? pieces.front().contiguous() : at::cat(pieces);
}

at::Tensor CheckpointTensors::whole(const StateFiles& kind, const std::string& param) const {
  if (!sharded()) return reader_.tensor(kind.whole_part, kind.tensor(param));
  for (size_t u = 0; u < layout_.size(); ++u)
    for (const FlatParam& p : layout_[u].params) {
      if (p.name != param) continue;
      if (!cached_flat_.defined() || cached_kind_ != &kind || cached_unit_ != u) {
        cached_flat_ = flat_range(kind, u, 0, layout_[u].numel);  // (numel,)
        cached_kind_ = &kind;
        cached_unit_ = u;
      }
      return cached_flat_.narrow(0, p.offset, p.numel).view(p.shape).clone();
    }
  LT_FAIL("checkpoint {}: no parameter '{}' in the sharding layout", reader_.directory().string(), param);
}

}  // namespace longtune::trainer
