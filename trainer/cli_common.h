// Helpers shared by the CLI subcommands: reading token files and loading a model from the command line.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

#include "model/llama.h"

namespace longtune::cli {

// Whitespace-separated integer token ids -> 1-D int64 tensor. Names the file and position on bad input.
at::Tensor read_token_file(const std::string& path, int64_t vocab_size);

// Loads an HF model directory or one of our checkpoints (step or run directory), optionally
// re-targeting its RoPE ("linear:4", see parse_rope_spec), in eval mode on the CPU.
model::Llama load_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec);

}  // namespace longtune::cli
