// Turning one of our training checkpoints into an HF model directory that transformers loads:
// safetensors weights, config.json carrying the trained RoPE scaling (PI: {type: linear, factor})
// and the new max_position_embeddings, and the tokenizer.model the run used. Not the HF-to-HF
// re-export (the export-hf CLI does that with model/hf_checkpoint directly).
#pragma once

#include <filesystem>
#include <string>

namespace longtune::trainer {

struct HfExportOptions {
  std::string dtype = "float32";  // storage dtype: float32 | bfloat16 | float16
  double max_shard_gb = 5.0;
};

// `checkpoint` is a step directory or a run directory (its newest complete checkpoint). Throws
// longtune::Error naming what is missing. Returns the step directory exported.
std::filesystem::path export_checkpoint_to_hf(const std::filesystem::path& checkpoint,
                                              const std::filesystem::path& out, const HfExportOptions& options);

}  // namespace longtune::trainer
