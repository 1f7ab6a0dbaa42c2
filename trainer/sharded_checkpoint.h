// Per-parameter state inside a training checkpoint (master weights, AdamW moments), read back from
// either of two layouts into any other:
//   whole: one part keyed by parameter name (one process, or rank 0 of a no_shard run);
//   sharded: one part per rank r holding that rank's piece of every unit's flat vector, plus the
//          unit layout and the world size that wrote it.
// Reading reshards: any range of any unit comes out of whichever files hold it, so a checkpoint
// written by W ranks resumes under W' ranks (or one process) and export reads one unit at a time.
// What the parts are called is trainer/training_state's (StateFiles); not the atomic save protocol
// (trainer/checkpoint) and not the sharding itself (dist/fsdp).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dist/flat_layout.h"

namespace longtune::trainer {

class CheckpointReader;

// Where one kind of per-parameter state is kept in each layout.
struct StateFiles {
  std::string whole_part;                                      // whole layout: the part holding it
  std::function<std::string(int rank)> rank_part;              // sharded: the part holding rank r's pieces
  std::function<std::string(const std::string& name)> tensor;  // parameter (whole) or unit (sharded) name -> key
};

// How a sharded checkpoint was split.
struct SavedSharding {
  std::vector<dist::FlatUnit> layout;
  int world_size = 0;
  std::string source;  // the file it was read from, for messages
};

class CheckpointTensors {
 public:
  // `layout` is the model's (dist::flat_units); a sharded checkpoint's layout (`saved`; nullopt for
  // the whole layout) must equal it.
  CheckpointTensors(const CheckpointReader& reader, std::vector<dist::FlatUnit> layout,
                    std::optional<SavedSharding> saved);

  bool sharded() const { return saved_.has_value(); }
  int saved_world_size() const { return sharded() ? saved_->world_size : 1; }
  const std::vector<dist::FlatUnit>& layout() const { return layout_; }

  // CPU tensors in the dtype they were saved in. Elements [begin, end) of unit `unit`'s flat vector:
  at::Tensor flat_range(const StateFiles& kind, size_t unit, int64_t begin, int64_t end) const;
  // One parameter's whole tensor, shaped.
  at::Tensor whole(const StateFiles& kind, const std::string& param) const;

 private:
  const CheckpointReader& reader_;
  std::vector<dist::FlatUnit> layout_;
  std::optional<SavedSharding> saved_;
  // The last whole unit whole() put together from shards: parameters are asked for in unit order,
  // so each unit's shards are read once, and no more than one unit is held.
  mutable const StateFiles* cached_kind_ = nullptr;
  mutable size_t cached_unit_ = 0;
  mutable at::Tensor cached_flat_;
};

}  // namespace longtune::trainer
