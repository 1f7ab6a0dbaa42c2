#include "cli/cli_common.h"

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>

#include <chrono>

#include <fstream>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "model/hf_checkpoint.h"
#include "dist/training_parameters.h"
#include "trainer/device.h"
#include "trainer/model_source.h"

namespace longtune::cli {

at::Tensor read_token_file(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path);
  LT_CHECK(in.good(), "cannot open token file '{}'", path);
  std::vector<int64_t> ids;
  std::string word;
  while (in >> word) {
    int64_t id = 0;
    size_t used = 0;
    try {
      id = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LT_CHECK(used == word.size(), "{}: token #{} '{}' is not an integer", path, ids.size(), word);
    LT_CHECK(id >= 0 && id < vocab_size, "{}: token #{} = {} is outside the vocabulary [0, {})", path, ids.size(), id,
             vocab_size);
    ids.push_back(id);
  }
  LT_CHECK(ids.size() >= 2, "{}: need at least 2 tokens, found {}", path, ids.size());
  return at::tensor(ids, at::kLong);
}

std::vector<std::vector<int64_t>> read_token_documents(const std::string& path, int64_t vocab_size) {
  std::ifstream in(path);
  LT_CHECK(in.good(), "cannot open token file '{}'", path);
  std::vector<std::vector<int64_t>> documents;
  int64_t line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    std::istringstream words(line);
    std::vector<int64_t> ids;
    for (std::string word; words >> word;) {
      int64_t id = 0;
      size_t used = 0;
      try {
        id = std::stoll(word, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      LT_CHECK(used == word.size(), "{}:{}: token #{} '{}' is not an integer", path, line_number, ids.size(), word);
      LT_CHECK(id >= 0 && id < vocab_size, "{}:{}: token #{} = {} is outside the vocabulary [0, {})", path,
               line_number, ids.size(), id, vocab_size);
      ids.push_back(id);
    }
    if (!ids.empty()) documents.push_back(std::move(ids));
  }
  LT_CHECK(!documents.empty(), "{}: no tokens (expected one document of token ids per line)", path);
  return documents;
}

namespace {

// The source of --model and its config with --rope-scaling applied.
std::pair<trainer::ModelSource, model::ModelConfig> eval_source(const std::string& dir, const std::string& rope_spec) {
  const trainer::ModelSource source = trainer::resolve_model_source(dir);
  LT_CHECK(source.kind != trainer::ModelSource::Kind::kPreset, "--model {}: expected a model directory or a "
           "checkpoint, not a preset", dir);
  config::ModelSection section;
  if (!rope_spec.empty()) section.rope_scaling = model::parse_rope_spec(rope_spec);
  return {source, trainer::job_model_config(section, source, /*seq_len=*/0, /*tokenizer_vocab=*/0)};
}

}  // namespace

model::Llama load_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec) {
  const auto [source, config] = eval_source(dir, rope_spec);
  model::Llama llama = trainer::build_model(config, source, model::dtype_from_name(dtype));
  llama->eval();
  return llama;
}

void add_eval_launch_options(CLI::App& command, EvalLaunchArgs& args) {
  command.add_option("--dtype", args.dtype, "compute dtype: auto (bfloat16 on a GPU, float32 on the CPU)|float32|bfloat16")
      ->capture_default_str();
  command.add_option("--sharding", args.sharding,
                     "under a launcher: full_shard (each rank holds 1/world of the model) or no_shard (a copy each)")
      ->capture_default_str();
  command.add_option("--collective-timeout", args.collective_timeout_s,
                     "seconds before a collective that does not complete fails (under a launcher)")
      ->capture_default_str();
}

EvalSetup setup_eval(const std::string& model_dir, const std::string& rope_spec, const EvalLaunchArgs& args) {
  LT_CHECK(args.sharding == "full_shard" || args.sharding == "no_shard",
           "--sharding must be full_shard or no_shard, got '{}'", args.sharding);
  LT_CHECK(args.collective_timeout_s > 0, "--collective-timeout must be > 0 seconds, got {}", args.collective_timeout_s);
  EvalSetup setup;
  setup.env = dist::read_dist_env();
  setup.device = trainer::pick_device(setup.env.local_rank);
  if (setup.env.distributed())
    setup.group = dist::ProcessGroup::create(setup.env, setup.device, dist::Backend::kAuto,
                                             std::chrono::seconds(args.collective_timeout_s));
  setup.model = load_eval_model(model_dir, eval_dtype(args.dtype, setup.device), rope_spec, setup.device,
                                args.sharding == "full_shard" ? setup.group.get() : nullptr);
  return setup;
}

std::string eval_dtype(const std::string& dtype, const c10::Device& device) {
  if (dtype != "auto") return dtype;
  return device.is_cuda() ? "bfloat16" : "float32";
}

EvalModel load_eval_model(const std::string& dir, const std::string& dtype, const std::string& rope_spec,
                          const c10::Device& device, dist::ProcessGroup* group) {
  EvalModel out;
  if (group == nullptr) {
    out.llama = load_model(dir, dtype, rope_spec);
    out.llama->to(device);
    return out;
  }
  const auto [source, config] = eval_source(dir, rope_spec);
  const at::ScalarType compute = model::dtype_from_name(dtype);
  out.llama = model::Llama(config, model::ParameterOptions{model::ParameterInit::kHollow, compute});
  // Evaluation keeps no fp32 masters: the shards are held in the compute dtype.
  out.sharding = std::make_unique<dist::ShardedParameters>(*out.llama, dist::MixedPrecision{compute, compute},
                                                           dist::ShardingStrategy::kFullShard, *group, device,
                                                           dist::ShardingOptions{device.is_cuda() ? 1 : 0});
  dist::load_weights(*out.sharding, *trainer::open_weights(source, config, /*seed=*/0));
  out.llama->eval();
  return out;
}

}  // namespace longtune::cli
