// Where the model a job trains comes from (`model.source`): a named preset with random init
// ("preset:tiny"), an HF model directory, or one of our checkpoints (a step directory, or a run
// directory meaning its newest complete checkpoint). Then the job's RoPE settings are applied:
// rope_scaling re-targets the position encoding (PI: linear, factor L'/L over the source's window)
// and rope_theta overrides the base. Not training state: only weights and shapes are taken.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "model/config.h"
#include "model/llama.h"
#include "model/weight_source.h"
#include "config/job_config.h"

namespace longtune::trainer {

struct ModelSource {
  enum class Kind { kPreset, kHfDirectory, kCheckpoint } kind = Kind::kPreset;
  std::string preset;                // kPreset
  std::filesystem::path directory;   // kHfDirectory: the HF dir; kCheckpoint: the step directory
};

// Classifies `source`; throws longtune::Error naming model.source if it is none of the three.
ModelSource resolve_model_source(const std::string& source);

// A checkpoint step directory for `path`: itself if it holds a COMPLETE marker, else the newest
// complete checkpoint under path/checkpoints; nullopt if neither.
std::optional<std::filesystem::path> find_checkpoint_directory(const std::filesystem::path& path);

// The shapes of the model the job trains: the source's config, with the job's RoPE applied, and
// for presets the window set to `seq_len` (pretraining) and the vocabulary to `tokenizer_vocab`
// when given (> 0). For HF/checkpoint sources a tokenizer vocabulary larger than the model's is an
// error.
model::ModelConfig job_model_config(const config::ModelSection& section, const ModelSource& source, int64_t seq_len,
                                    int64_t tokenizer_vocab);

// The SentencePiece tokenizer a source carries (an HF directory's tokenizer.model, the one a
// checkpoint saved), or nullopt (presets carry none).
std::optional<std::filesystem::path> source_tokenizer(const ModelSource& source);

// Bytes of the HF directory's safetensors files, which loading maps (each rank touching its range);
// 0 for presets and checkpoints (read one unit range at a time).
int64_t source_weight_file_bytes(const ModelSource& source);

// The weights of `source` for a model of `config` (checked against it at open): the HF
// directory's, the checkpoint's masters, or for presets HF's initialisation seeded by `seed`
// (model/seeded_init: the same values under any number of ranks).
std::unique_ptr<model::WeightSource> open_weights(const ModelSource& source, const model::ModelConfig& config,
                                                  uint64_t seed);

// The whole model on the CPU in `dtype`, filled from open_weights(source, config, seed): each
// parameter allocated once and read once, no random initialisation first.
model::Llama build_model(const model::ModelConfig& config, const ModelSource& source, at::ScalarType dtype,
                         uint64_t seed = 0);

}  // namespace longtune::trainer
