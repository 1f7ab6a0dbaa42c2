// `longtune export-hf`: writes an HF directory (config.json with rope scaling and window,
// safetensors, tokenizer files copied) that transformers loads. Source: an HF directory (--model)
// or one of our training checkpoints (--checkpoint: a step directory or a run directory).
#include <CLI/CLI.hpp>

#include <filesystem>

#include "common/check.h"
#include "common/log.h"
#include "model/hf_checkpoint.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "trainer/hf_export.h"
#include "data/tokenizer.h"

namespace longtune::cli {

namespace {

struct ExportArgs {
  std::string model_dir, checkpoint, out, rope, dtype;
  double max_shard_gb = 5.0;
};

void run_export(const ExportArgs& args) {
  namespace fs = std::filesystem;
  LT_CHECK(args.model_dir.empty() != args.checkpoint.empty(), "export-hf: give exactly one of --model or --checkpoint");
  if (!args.checkpoint.empty()) {
    LT_CHECK(args.rope.empty(), "export-hf --checkpoint: the checkpoint's trained RoPE is exported; "
             "--rope-scaling applies to --model only");
    trainer::HfExportOptions options;
    options.dtype = args.dtype;  // empty: the dtype the run trained in
    options.max_shard_gb = args.max_shard_gb;
    trainer::export_checkpoint_to_hf(args.checkpoint, args.out, options);
    return;
  }
  LT_CHECK(fs::weakly_canonical(args.model_dir) != fs::weakly_canonical(args.out),
           "export-hf: --out must differ from the source directory '{}'", args.model_dir);
  const std::string storage = args.dtype.empty() ? model::load_hf_model_config(args.model_dir).torch_dtype : args.dtype;
  model::Llama llama = load_model(args.model_dir, "float32", args.rope);
  model::HfSaveOptions options;
  options.dtype = model::dtype_from_name(storage);
  options.max_shard_bytes = static_cast<int64_t>(args.max_shard_gb * 1e9);
  model::save_hf_model(*llama, args.out, options);
  for (const std::string& name : data::hf_tokenizer_file_names()) {
    const fs::path source = fs::path(args.model_dir) / name;
    if (fs::exists(source)) fs::copy_file(source, fs::path(args.out) / name, fs::copy_options::overwrite_existing);
  }
  LT_INFO("exported {} ({} storage, max_position_embeddings={}, rope={}) to {}", args.model_dir, storage,
          llama->config().max_position_embeddings, model::to_string(llama->config().rope_scaling.type), args.out);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand("export-hf", "Write an HF model directory that transformers loads");
  cmd->add_option("--model", args->model_dir, "source HF model directory");
  cmd->add_option("--checkpoint", args->checkpoint, "source training checkpoint (step or run directory)");
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--rope-scaling", args->rope, "record a RoPE scaling: TYPE:FACTOR[:ORIGINAL], e.g. linear:4");
  cmd->add_option("--dtype", args->dtype,
                  "storage dtype float32|bfloat16|float16 (default: the source's; for --checkpoint the run's "
                  "training dtype, model.dtype)");
  cmd->add_option("--max-shard-gb", args->max_shard_gb, "split weights into files of at most this size")
      ->capture_default_str();
  cmd->callback([args] { run_export(*args); });
}

}  // namespace longtune::cli
