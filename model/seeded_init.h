// HF's initialisation of a LLaMA (normal(0, std) for every matrix, ones for the norm weights) as a
// weight source whose every element depends only on (seed, parameter name, element index): each
// parameter is cut into fixed chunks of 65536 elements, and chunk c is drawn from its own CPU
// generator seeded by a hash of (seed, name, c). Any range of any parameter is computed alone, so
// a rank initialises just its shard, and a model initialised under 1, 2 or 8 ranks is bitwise the
// same. Not torch's global-generator stream: values differ from nn.init.normal_ on a whole tensor.
#pragma once

#include <cstdint>
#include <string>

#include "model/weight_source.h"

namespace longtune::model {

class SeededInit final : public WeightSource {
 public:
  static constexpr int64_t kChunk = 65536;

  explicit SeededInit(uint64_t seed, double std = 0.02) : seed_(seed), std_(std) {}
  void read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const override;

 private:
  uint64_t seed_;
  double std_;
};

// Whether HF initialises `name` to ones (RMSNorm weights) rather than normal(0, std).
bool is_norm_weight(const std::string& name);

}  // namespace longtune::model
