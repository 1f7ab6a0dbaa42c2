// How the parameters of a model are grouped into flat "units" for sharding (the model's units: the
// embedding, each decoder layer, the final norm and head) and how a unit's flat vector is split
// over ranks: each rank owns ceil(numel / world) consecutive elements, the last ones padded, so any
// world size works. Pure arithmetic and naming, shared by the sharding code, sharded checkpoints
// and the export; no tensors and no communication.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace longtune::model {
class LlamaImpl;
}

namespace longtune::dist {

struct FlatParam {
  std::string name;            // as in named_parameters() (the HF name)
  std::vector<int64_t> shape;
  int64_t offset = 0;          // first element in the unit's flat vector
  int64_t numel = 0;
};

struct FlatUnit {
  std::string name;            // "embed", "layer.<i>", "head"
  std::vector<FlatParam> params;
  int64_t numel = 0;           // without padding

  // Elements each of `world` ranks owns (the padded vector is world * shard_numel long).
  int64_t shard_numel(int world) const { return (numel + world - 1) / world; }
  // The unpadded part [begin, end) of the flat vector that `rank` owns (empty past the end).
  int64_t shard_begin(int rank, int world) const;
  int64_t shard_end(int rank, int world) const;
};

// The units of `model` in forward order, with every parameter in named_parameters() order.
std::vector<FlatUnit> flat_units(model::LlamaImpl& model);

// JSON (sharding.json in sharded checkpoints) and back; from_json throws longtune::Error naming
// `context` on anything malformed.
std::string layout_to_json(const std::vector<FlatUnit>& units, int world_size);
std::vector<FlatUnit> layout_from_json(const std::string& json_text, const std::string& context, int* world_size);

}  // namespace longtune::dist
