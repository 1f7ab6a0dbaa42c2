// Turning one of our training checkpoints into an HF model directory that transformers loads:
// safetensors weights, config.json carrying the trained RoPE scaling (PI: {type: linear, factor})
// and the new max_position_embeddings, and the tokenizer.model the run used, stored by default in
// the dtype the run trained in (its model.dtype: bf16 for bf16_mixed). Not the HF-to-HF
// re-export (the export-hf CLI does that with model/hf_checkpoint directly).
#pragma once

#include <filesystem>
#include <string>

namespace longtune::trainer {

struct HfExportOptions {
  std::string dtype;         // storage dtype: float32 | bfloat16 | float16; "" = the run's training dtype
  double max_shard_gb = 5.0;
  bool verify = true;        // re-hash the checkpoint first; off only for one this process wrote or verified
};

// `checkpoint` is a step directory or a run directory (its newest complete checkpoint). Throws
// longtune::Error naming what is missing. Returns the step directory exported.
std::filesystem::path export_checkpoint_to_hf(const std::filesystem::path& checkpoint,
                                              const std::filesystem::path& out, const HfExportOptions& options);

}  // namespace longtune::trainer
