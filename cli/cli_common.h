// Helpers shared by the CLI subcommands: reading token files and loading a model from the command line.
#pragma once

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/fsdp.h"
#include "dist/process_group.h"
#include "model/llama.h"

namespace longtune::cli {

// Whitespace-separated integer token ids -> 1-D int64 tensor. Names the file and position on bad input.
at::Tensor read_token_file(const std::string& path, int64_t vocab_size);

// A token file read as documents: each non-empty line is one document of whitespace-separated ids.
// Names the file, line and token on bad input; throws if no line holds a token.
std::vector<std::vector<int64_t>> read_token_documents(const std::string& path, int64_t vocab_size);

// Loads an HF model directory or one of our checkpoints (step or run directory), optionally
// re-targeting its RoPE ("linear:4", see parse_rope_spec), in eval mode on the CPU.
model::Llama load_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec);

// "auto" is bfloat16 on a GPU and float32 on the CPU; other names pass through.
std::string eval_dtype(const std::string& dtype, const c10::Device& device);

// A model to evaluate on `device`. With a process group it is sharded full_shard: built hollow,
// each rank reading only its shard of each unit (so a model larger than one device evaluates),
// units gathered for each forward; every forward is then collective (see PerplexityOptions::lockstep).
// Without one, the whole model on the device.
struct EvalModel {
  model::Llama llama{nullptr};
  std::unique_ptr<dist::ShardedParameters> sharding;  // null: whole
  bool sharded() const { return sharding != nullptr; }
};
EvalModel load_eval_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec,
                          const c10::Device& device, dist::ProcessGroup* group);

}  // namespace longtune::cli
