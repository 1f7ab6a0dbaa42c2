// Helpers shared by the CLI subcommands: reading token files and loading a model from the command line.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

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

}  // namespace longtune::cli
