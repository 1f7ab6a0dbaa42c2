#include "trainer/model_source.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <fmt/ranges.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/log.h"
#include "common/file_io.h"
#include "model/hf_checkpoint.h"
#include "model/safetensors.h"
#include "model/seeded_init.h"
#include "trainer/checkpoint.h"
#include "trainer/training_state.h"
#include "data/tokenizer.h"

namespace longtune::trainer {
namespace fs = std::filesystem;

namespace {
constexpr const char* kPresetPrefix = "preset:";
}  // namespace

std::optional<fs::path> find_checkpoint_directory(const fs::path& path) {
  if (CheckpointManager::is_complete(path)) return path;
  const std::vector<fs::path> complete = CheckpointManager(path, /*keep_last=*/1).list_complete();
  if (complete.empty()) return std::nullopt;
  return complete.front();
}

ModelSource resolve_model_source(const std::string& source) {
  ModelSource resolved;
  if (source.starts_with(kPresetPrefix)) {
    resolved.kind = ModelSource::Kind::kPreset;
    resolved.preset = source.substr(std::string(kPresetPrefix).size());
    model::model_preset(resolved.preset);  // throws naming the unknown preset
    return resolved;
  }
  const fs::path path(source);
  LT_CHECK(fs::exists(path), "model.source: '{}' is not a preset (preset:NAME), and no such directory exists",
           source);
  if (fs::is_regular_file(path / "config.json")) {
    resolved.kind = ModelSource::Kind::kHfDirectory;
    resolved.directory = path;
    return resolved;
  }
  if (auto checkpoint = find_checkpoint_directory(path)) {
    resolved.kind = ModelSource::Kind::kCheckpoint;
    resolved.directory = *checkpoint;
    return resolved;
  }
  LT_FAIL("model.source: {} is neither an HF model directory (config.json) nor a longtune checkpoint "
          "(COMPLETE marker, or a run directory with checkpoints/)", source);
}

model::ModelConfig job_model_config(const config::ModelSection& section, const ModelSource& source, int64_t seq_len,
                                    int64_t tokenizer_vocab) {
  model::ModelConfig config;
  switch (source.kind) {
    case ModelSource::Kind::kPreset:
      config = model::model_preset(source.preset);
      if (tokenizer_vocab > 0) config.vocab_size = tokenizer_vocab;
      if (section.rope_scaling.type == model::RopeType::kDefault) config.max_position_embeddings = seq_len;
      break;
    case ModelSource::Kind::kHfDirectory:
      config = model::load_hf_model_config(source.directory.string());
      break;
    case ModelSource::Kind::kCheckpoint:
      config = CheckpointWeights(source.directory).model_config();
      break;
  }
  if (source.kind != ModelSource::Kind::kPreset)
    LT_CHECK(tokenizer_vocab <= config.vocab_size,
             "data.tokenizer has {} pieces but the model's vocabulary is {}: they do not belong together",
             tokenizer_vocab, config.vocab_size);
  if (section.rope_theta) config.rope_theta = *section.rope_theta;
  if (section.rope_scaling.type != model::RopeType::kDefault) {
    config = model::with_rope_scaling(config, section.rope_scaling);
    // The factor counts from the model's own window; a factor meant for another model's window
    // shows up here, before any step is spent on it.
    const model::RopeScaling& scaling = config.rope_scaling;
    if (seq_len > 0 && scaling.type != model::RopeType::kDynamic && config.max_position_embeddings != seq_len)
      LT_WARN("model.rope_scaling: factor {} over the model's pretrained window {} gives a window of {}, but "
              "data.seq_len is {} (factor {} would match it)", scaling.factor,
              scaling.original_max_position_embeddings.value_or(0), config.max_position_embeddings, seq_len,
              static_cast<double>(seq_len) / scaling.original_max_position_embeddings.value_or(seq_len));
  }
  config.validate();
  return config;
}

int64_t source_weight_file_bytes(const ModelSource& source) {
  if (source.kind != ModelSource::Kind::kHfDirectory) return 0;
  int64_t bytes = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(source.directory))
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors")
      bytes += static_cast<int64_t>(entry.file_size());
  return bytes;
}

std::optional<fs::path> source_tokenizer(const ModelSource& source) {
  switch (source.kind) {
    case ModelSource::Kind::kPreset:
      return std::nullopt;
    case ModelSource::Kind::kHfDirectory:
      return data::find_tokenizer_file(source.directory);
    case ModelSource::Kind::kCheckpoint:
      return CheckpointWeights(source.directory).tokenizer();
  }
  return std::nullopt;
}

std::unique_ptr<model::WeightSource> open_weights(const ModelSource& source, const model::ModelConfig& config,
                                                  uint64_t seed) {
  switch (source.kind) {
    case ModelSource::Kind::kPreset:
      return std::make_unique<model::SeededInit>(seed);
    case ModelSource::Kind::kHfDirectory:
      return std::make_unique<model::HfWeights>(source.directory.string(), config);
    case ModelSource::Kind::kCheckpoint:
      // Whole or sharded (any world size): the checkpoint's masters.
      return std::make_unique<CheckpointWeights>(source.directory);
  }
  LT_FAIL("model.source: unknown kind");
}

model::Llama build_model(const model::ModelConfig& config, const ModelSource& source, at::ScalarType dtype,
                         uint64_t seed) {
  const std::unique_ptr<model::WeightSource> weights = open_weights(source, config, seed);
  model::Llama llama(config, model::ParameterOptions{model::ParameterInit::kEmpty, dtype});
  model::load_weights(*llama, *weights);
  return llama;
}

}  // namespace longtune::trainer
