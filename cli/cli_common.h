// Helpers shared by the CLI subcommands: reading token files and loading a model from the command line.
#pragma once

#include <ATen/core/Tensor.h>

#include <c10/core/Device.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/dist_env.h"
#include "dist/fsdp.h"
#include "dist/process_group.h"
#include "model/llama.h"

namespace CLI {
class App;
}

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

// The options every `eval` command takes for its dtype and for running under a launcher.
struct EvalLaunchArgs {
  std::string dtype = "auto";
  std::string sharding = "full_shard";
  int64_t collective_timeout_s = 1800;
};
void add_eval_launch_options(CLI::App& command, EvalLaunchArgs& args);

// An eval command's process: its rank (a process group under a launcher), device and model.
struct EvalSetup {
  dist::DistEnv env;
  c10::Device device{c10::kCPU};
  std::unique_ptr<dist::ProcessGroup> group;  // null for one process
  EvalModel model;
  bool leader() const { return env.rank == 0; }
};
EvalSetup setup_eval(const std::string& model_dir, const std::string& rope_spec, const EvalLaunchArgs& args);

}  // namespace longtune::cli
