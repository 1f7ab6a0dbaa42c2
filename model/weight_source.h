// Where a model's weights come from, one range of one parameter at a time: an HF directory
// (model/hf_checkpoint), a training checkpoint (trainer/training_state), HF's random
// initialisation (model/seeded_init), or another model in memory (ModuleWeights, here). Reading by
// range is what lets a rank fill only its shard of each unit, converting from the stored dtype
// straight into the destination's, so no rank ever holds a whole model it does not need. Not the
// sharding (dist/) and not a file format.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

namespace longtune::model {

class LlamaImpl;

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Elements [begin, end) of parameter `name` (HF's name, flattened in row-major order) into `out`,
  // a 1-D tensor of end - begin elements of any floating dtype on any device, converting as needed.
  // Throws longtune::Error naming the source and the tensor when it cannot.
  virtual void read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const = 0;
};

// Every parameter of `model` (which must have storage) filled whole from `source`.
void load_weights(LlamaImpl& model, const WeightSource& source);

// The values a model's parameters hold now, kept even when the model's parameters are later given
// other storage (as sharding does): tests and tools that copy one model into another.
class ModuleWeights final : public WeightSource {
 public:
  explicit ModuleWeights(LlamaImpl& model);
  void read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const override;

 private:
  std::map<std::string, at::Tensor> values_;
};

}  // namespace longtune::model
