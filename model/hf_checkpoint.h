// HF checkpoint directories: config.json + model.safetensors, or sharded model-*.safetensors with
// model.safetensors.index.json. Loading (HfWeights) checks every tensor against the config (names,
// shapes) and names the file and tensor on any mismatch; saving writes a directory transformers
// 4.x and 5.x load.
// Not here: tokenizer files (copied by the caller), our training checkpoints (trainer/).
#pragma once

#include <c10/core/ScalarType.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>
#include <string>

#include "model/config.h"
#include "model/llama.h"
#include "model/weight_source.h"

namespace longtune::model {

// Reads `dir`/config.json.
ModelConfig load_hf_model_config(const std::string& dir);

class SafetensorsFile;

// The weights of an HF directory as a WeightSource. Opening checks every tensor against `config`
// (each parameter of that model present, in its shape and a floating dtype; nothing unexpected
// besides RoPE's old inv_freq buffers and a tied model's lm_head) and names the file and tensor on
// any mismatch. Reads come from the memory-mapped files, converted from their dtype (fp16, bf16,
// fp32) into the destination's, touching only the bytes of the range read.
class HfWeights final : public WeightSource {
 public:
  HfWeights(const std::string& dir, const ModelConfig& config);
  ~HfWeights() override;
  void read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const override;

 private:
  std::string dir_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> file_of_;  // parameter name -> the open file holding it
};

struct HfSaveOptions {
  at::ScalarType dtype = at::kFloat;       // storage dtype of the written tensors
  int64_t max_shard_bytes = 5'000'000'000;  // split into model-0000k-of-0000n files beyond this
};
// Writes config.json (with the model's rope scaling and max_position_embeddings) and safetensors.
void save_hf_model(LlamaImpl& model, const std::string& dir, const HfSaveOptions& options = {});

// Writes an HF directory from weights produced one group at a time: group k (of `groups`) becomes
// model-0000k-of-0000n.safetensors, so a caller that consolidates shards never holds more than one
// group. `produce(k)` returns the group's named tensors (converted to options.dtype here).
void save_hf_model_streamed(const ModelConfig& config, const std::string& dir, int64_t groups,
                            const std::function<std::vector<std::pair<std::string, at::Tensor>>(int64_t)>& produce,
                            const HfSaveOptions& options = {});

// "float32" | "bfloat16" | "float16" -> dtype; throws otherwise.
at::ScalarType dtype_from_name(const std::string& name);
std::string dtype_name(at::ScalarType dtype);

}  // namespace longtune::model
