#include "trainer/sharded_checkpoint.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "common/check.h"
#include "trainer/checkpoint.h"

namespace longtune::trainer {

namespace {

std::string part_of(const std::string& kind) { return kind == "model" ? "model" : "optimizer"; }
std::string tensor_of(const std::string& kind, const std::string& name) {
  return kind == "model" ? name : kind + "/" + name;
}

void check_kind(const std::string& kind) {
  LT_CHECK(kind == "model" || kind == "exp_avg" || kind == "exp_avg_sq", "checkpoint: unknown state kind '{}'",
           kind);
}

}  // namespace

std::string rank_part(const std::string& part, int rank) { return fmt::format("{}.rank{:05d}", part, rank); }

CheckpointTensors::CheckpointTensors(const CheckpointReader& reader, std::vector<dist::FlatUnit> layout)
    : reader_(reader), layout_(std::move(layout)) {
  if (!reader.has_part("sharding")) return;
  const std::string context = (reader.directory() / "sharding.json").string();
  const std::vector<dist::FlatUnit> saved = dist::layout_from_json(reader.json("sharding"), context, &saved_world_);
  LT_CHECK(saved.size() == layout_.size(), "{}: {} units, but the model has {}", context, saved.size(),
           layout_.size());
  for (size_t u = 0; u < saved.size(); ++u) {
    const dist::FlatUnit& a = saved[u];
    const dist::FlatUnit& b = layout_[u];
    LT_CHECK(a.name == b.name && a.numel == b.numel && a.params.size() == b.params.size(),
             "{}: unit {} is '{}' with {} elements, but the model's is '{}' with {}", context, u, a.name, a.numel,
             b.name, b.numel);
    for (size_t i = 0; i < a.params.size(); ++i)
      LT_CHECK(a.params[i].name == b.params[i].name && a.params[i].shape == b.params[i].shape,
               "{}: unit '{}' parameter {} is '{}', but the model's is '{}' (or its shape differs)", context, a.name,
               i, a.params[i].name, b.params[i].name);
  }
}

at::Tensor CheckpointTensors::flat_range(const std::string& kind, size_t unit_index, int64_t begin,
                                         int64_t end) const {
  check_kind(kind);
  LT_CHECK(unit_index < layout_.size(), "checkpoint: no unit {}", unit_index);
  const dist::FlatUnit& unit = layout_[unit_index];
  LT_CHECK(0 <= begin && begin <= end && end <= unit.numel, "checkpoint: range [{}, {}) outside unit '{}' of {}",
           begin, end, unit.name, unit.numel);
  std::vector<at::Tensor> pieces;
  if (sharded()) {
    for (int r = 0; r < saved_world_; ++r) {
      const int64_t lo = std::max(begin, unit.shard_begin(r, saved_world_));
      const int64_t hi = std::min(end, unit.shard_end(r, saved_world_));
      if (lo >= hi) continue;
      const at::Tensor shard = reader_.tensor(rank_part(part_of(kind), r), tensor_of(kind, unit.name));
      const int64_t expected = unit.shard_end(r, saved_world_) - unit.shard_begin(r, saved_world_);
      LT_CHECK(shard.dim() == 1 && shard.numel() == expected,
               "checkpoint {}: '{}' of rank {} has {} elements, the layout says {}", reader_.directory().string(),
               tensor_of(kind, unit.name), r, shard.numel(), expected);
      pieces.push_back(shard.narrow(0, lo - unit.shard_begin(r, saved_world_), hi - lo));
    }
  } else {
    for (const dist::FlatParam& p : unit.params) {
      const int64_t lo = std::max(begin, p.offset);
      const int64_t hi = std::min(end, p.offset + p.numel);
      if (lo >= hi) continue;
      const at::Tensor value = whole(kind, p.name);
      pieces.push_back(value.reshape({-1}).narrow(0, lo - p.offset, hi - lo));
    }
  }
  if (pieces.empty()) {
    const at::Tensor probe = sharded() ? at::Tensor() : whole(kind, unit.params.front().name);
    return at::empty({0}, probe.defined() ? probe.options() : at::TensorOptions().dtype(at::kFloat));
  }
  return pieces.size() == 1 ? pieces.front().contiguous() : at::cat(pieces);
}

at::Tensor CheckpointTensors::whole(const std::string& kind, const std::string& param) const {
  check_kind(kind);
  if (!sharded()) return reader_.tensor(part_of(kind), tensor_of(kind, param));
  for (size_t u = 0; u < layout_.size(); ++u)
    for (const dist::FlatParam& p : layout_[u].params) {
      if (p.name != param) continue;
      if (!cached_flat_.defined() || cached_kind_ != kind || cached_unit_ != u) {
        cached_flat_ = flat_range(kind, u, 0, layout_[u].numel);  // (numel,)
        cached_kind_ = kind;
        cached_unit_ = u;
      }
      return cached_flat_.narrow(0, p.offset, p.numel).view(p.shape).clone();
    }
  LT_FAIL("checkpoint {}: no parameter '{}' in the sharding layout", reader_.directory().string(), param);
}

at::Tensor CheckpointTensors::optimizer_step() const {
  return reader_.tensor(sharded() ? rank_part("optimizer", 0) : "optimizer", "step");
}

}  // namespace longtune::trainer
