// Parameters and optimizer state inside a training checkpoint, in either of two layouts, each
// readable into either:
//   whole: model.safetensors and optimizer.safetensors keyed by parameter name (one process, or
//          rank 0 of a no_shard run);
//   sharded: per rank r, model.rankRRRRR.safetensors and optimizer.rankRRRRR.safetensors holding
//          that rank's piece of every unit's flat vector, plus sharding.json (the unit layout and
//          the world size that wrote it).
// Reading reshards: any range of any unit comes out of whichever files hold it, so a checkpoint
// written by W ranks resumes under W' ranks (or one process) and export reads one unit at a time.
// Not the atomic save protocol (trainer/checkpoint) and not the sharding itself (trainer/fsdp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dist/flat_layout.h"

namespace longtune::trainer {

class CheckpointReader;

// "model.rank00003"
std::string rank_part(const std::string& part, int rank);

class CheckpointTensors {
 public:
  // `layout` is the model's (flat_units); a sharded checkpoint's own layout must equal it.
  CheckpointTensors(const CheckpointReader& reader, std::vector<dist::FlatUnit> layout);

  bool sharded() const { return saved_world_ > 0; }
  int saved_world_size() const { return sharded() ? saved_world_ : 1; }
  const std::vector<dist::FlatUnit>& layout() const { return layout_; }

  // kind: "model" (master weights), "exp_avg" or "exp_avg_sq" (AdamW moments). CPU tensors in the
  // dtype they were saved in.
  // Elements [begin, end) of unit `unit`'s flat vector.
  at::Tensor flat_range(const std::string& kind, size_t unit, int64_t begin, int64_t end) const;
  // One parameter's whole tensor, shaped.
  at::Tensor whole(const std::string& kind, const std::string& param) const;
  // AdamW's step count (a float32 scalar).
  at::Tensor optimizer_step() const;

 private:
  const CheckpointReader& reader_;
  std::vector<dist::FlatUnit> layout_;
  int saved_world_ = 0;  // 0: whole layout
  // The last whole unit whole() put together from shards: parameters are asked for in unit order,
  // so each unit's shards are read once, and no more than one unit is held.
  mutable std::string cached_kind_;
  mutable size_t cached_unit_ = 0;
  mutable at::Tensor cached_flat_;
};

}  // namespace longtune::trainer
