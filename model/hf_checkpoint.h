// HF checkpoint directories: config.json + model.safetensors, or sharded model-*.safetensors with
// model.safetensors.index.json. Loading checks every tensor against the config (names, shapes) and
// names the file and tensor on any mismatch; saving writes a directory transformers 4.x and 5.x load.
// Not here: tokenizer files (copied by the caller), our training checkpoints (trainer/).
#pragma once

#include <c10/core/ScalarType.h>

#include <functional>
#include <optional>
#include <utility>
#include <vector>
#include <string>

#include "model/config.h"
#include "model/llama.h"

namespace longtune::model {

// Reads `dir`/config.json.
ModelConfig load_hf_model_config(const std::string& dir);

// Builds a model from `config` and fills it from the safetensors in `dir`, converting to `dtype`.
Llama load_hf_model(const std::string& dir, const ModelConfig& config, at::ScalarType dtype = at::kFloat);
// Same, with the config read from `dir`/config.json.
Llama load_hf_model(const std::string& dir, at::ScalarType dtype = at::kFloat);

// Copies the weights of `dir` into an existing model (names and shapes must match exactly).
void load_hf_weights(LlamaImpl& model, const std::string& dir);

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
