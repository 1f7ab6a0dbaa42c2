#include "trainer/model_source.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <fmt/ranges.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#include "model/hf_checkpoint.h"
#include "model/safetensors.h"
#include "trainer/checkpoint.h"
#include "dist/flat_layout.h"
#include "trainer/sharded_checkpoint.h"

namespace longtune::trainer {
namespace fs = std::filesystem;

namespace {
constexpr const char* kPresetPrefix = "preset:";
// Names inside our checkpoints (trainer/trainer.cpp writes them).
constexpr const char* kModelConfigPart = "model_config.json";
}  // namespace

std::optional<fs::path> find_checkpoint_directory(const fs::path& path) {
  if (fs::is_regular_file(path / "COMPLETE")) return path;
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
    case ModelSource::Kind::kCheckpoint: {
      const fs::path file = source.directory / kModelConfigPart;
      config = model::model_config_from_hf_json(nlohmann::json::parse(read_file(file)), file.string());
      break;
    }
  }
  if (source.kind != ModelSource::Kind::kPreset)
    LT_CHECK(tokenizer_vocab <= config.vocab_size,
             "data.tokenizer has {} pieces but the model's vocabulary is {}: they do not belong together",
             tokenizer_vocab, config.vocab_size);
  if (section.rope_theta) config.rope_theta = *section.rope_theta;
  if (section.rope_scaling.type != model::RopeType::kDefault)
    config = model::with_rope_scaling(config, section.rope_scaling);
  config.validate();
  return config;
}

model::Llama build_model(const model::ModelConfig& config, const ModelSource& source, at::ScalarType dtype) {
  model::Llama llama(config);
  switch (source.kind) {
    case ModelSource::Kind::kPreset:
      llama->init_weights();
      break;
    case ModelSource::Kind::kHfDirectory:
      model::load_hf_weights(*llama, source.directory.string());
      break;
    case ModelSource::Kind::kCheckpoint: {
      // Whole or sharded (any world size): the checkpoint's masters, one parameter at a time.
      const CheckpointReader reader(source.directory);
      const CheckpointTensors saved(reader, dist::flat_units(*llama));
      torch::NoGradGuard no_grad;
      for (const auto& item : llama->named_parameters()) {
        const at::Tensor value = saved.whole("model", item.key());
        LT_CHECK(value.sizes() == item.value().sizes(), "{}: tensor {} has shape {}, the model needs {}",
                 source.directory.string(), item.key(), fmt::format("{}", fmt::join(value.sizes(), "x")),
                 fmt::format("{}", fmt::join(item.value().sizes(), "x")));
        item.value().copy_(value);
      }
      break;
    }
  }
  llama->to(dtype);
  return llama;
}

}  // namespace longtune::trainer
