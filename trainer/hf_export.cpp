#include "trainer/hf_export.h"

#include <ATen/ATen.h>

#include "common/check.h"
#include "config/job_config.h"
#include "common/log.h"
#include "model/hf_checkpoint.h"
#include "dist/flat_layout.h"
#include "trainer/checkpoint.h"
#include "trainer/model_source.h"
#include "trainer/training_state.h"
#include "data/tokenizer.h"

namespace longtune::trainer {
namespace fs = std::filesystem;

namespace {

// The compute dtype the checkpoint's run trained in (model.dtype of its resolved job config), or
// float32 with a warning when that config does not read as a job of this version.
std::string training_dtype(const fs::path& step_dir) {
  const CheckpointReader reader(step_dir);
  const std::string source = (step_dir / resolved_config_name()).string();
  try {
    return config::to_string(config::parse_job_config_string(reader.file(resolved_config_name()), source).model.dtype);
  } catch (const Error& e) {
    LT_WARN("{}: cannot tell the training dtype ({}); exporting float32 (choose with --dtype)", source, e.what());
    return "float32";
  }
}

}  // namespace

fs::path export_checkpoint_to_hf(const fs::path& checkpoint, const fs::path& out, const HfExportOptions& options) {
  const auto step_dir = find_checkpoint_directory(checkpoint);
  LT_CHECK(step_dir.has_value(), "export-hf --checkpoint {}: not a checkpoint (no COMPLETE marker) and no "
           "complete checkpoint under {}/checkpoints", checkpoint.string(), checkpoint.string());
  std::string why;
  LT_CHECK(!options.verify || CheckpointManager::verify(*step_dir, &why), "{}: damaged checkpoint: {}",
           step_dir->string(), why);
  ModelSource source;
  source.kind = ModelSource::Kind::kCheckpoint;
  source.directory = *step_dir;
  const model::ModelConfig config = job_model_config(config::ModelSection{}, source, 0, 0);
  model::HfSaveOptions save;
  const std::string dtype = options.dtype.empty() ? training_dtype(*step_dir) : options.dtype;
  save.dtype = model::dtype_from_name(dtype);
  save.max_shard_bytes = static_cast<int64_t>(options.max_shard_gb * 1e9);
  const CheckpointWeights weights(*step_dir);
  if (const auto& sharding = weights.sharding()) {
    // Consolidate one unit at a time from however many ranks' shards hold it: one file per unit.
    const std::vector<dist::FlatUnit>& layout = sharding->layout;
    model::save_hf_model_streamed(config, out.string(), static_cast<int64_t>(layout.size()), [&](int64_t u) {
      const dist::FlatUnit& unit = layout[static_cast<size_t>(u)];
      const at::Tensor flat = weights.unit(static_cast<size_t>(u));  // (numel,)
      std::vector<std::pair<std::string, at::Tensor>> tensors;
      for (const dist::FlatParam& p : unit.params)
        tensors.emplace_back(p.name, flat.narrow(0, p.offset, p.numel).view(p.shape));
      return tensors;
    }, save);
    LT_INFO("consolidated {} units from the shards of {} ranks", layout.size(), sharding->world_size);
  } else {
    model::Llama llama = build_model(config, source, at::kFloat);
    model::save_hf_model(*llama, out.string(), save);
  }
  if (const auto tokenizer = weights.tokenizer()) {
    for (const fs::path& file : data::tokenizer_files(*tokenizer))
      fs::copy_file(file, out / file.filename(), fs::copy_options::overwrite_existing);
  } else {
    LT_WARN("{}: holds no tokenizer (the run had no data.tokenizer); copy it into {} yourself",
            step_dir->string(), out.string());
  }
  LT_INFO("exported {} (step {}, {}, window {}, rope {} x{}) to {}", step_dir->string(),
          CheckpointManager::step_of(*step_dir), dtype, config.max_position_embeddings,
          model::to_string(config.rope_scaling.type), config.rope_scaling.factor, out.string());
  return *step_dir;
}

}  // namespace longtune::trainer
