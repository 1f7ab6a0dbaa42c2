// The layout of a training checkpoint, owned here alone: the name of every part and file inside a
// step directory (and of the completion marker), how optimizer moments are keyed, and how each
// stateful part of a run (parameters and optimizer, data reader, RNG, counters, resolved config)
// saves and loads itself through trainer/checkpoint's atomic protocol. Parameters and optimizer
// state are laid out whole (keyed by parameter) or sharded (each rank's piece of every unit plus
// the unit layout), from what dist::TrainingParameters says of its masters; either layout loads
// into either (trainer/sharded_checkpoint). Readers that want only the model (model sources, the
// HF export) go through CheckpointWeights. Not when to save (the trainer), not the protocol itself.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "config/job_config.h"
#include "dist/flat_layout.h"
#include "model/config.h"
#include "model/weight_source.h"
#include "trainer/sharded_checkpoint.h"

namespace longtune::data {
class PackedSequenceReader;
}
namespace longtune::dist {
class ProcessGroup;
class TrainingParameters;
}
namespace longtune::model {
class LlamaImpl;
}

namespace longtune::trainer {

class AdamW;
class CheckpointManager;
class CheckpointReader;
class CheckpointWriter;

// The file the atomic save writes last; a step directory holding it is complete.
const char* complete_marker_name();
// The resolved job config's file name, in a checkpoint and at the top of a run directory.
const char* resolved_config_name();

struct TrainingCounters {
  int64_t step = 0;           // optimizer steps completed
  int64_t skipped_steps = 0;  // steps dropped by nan_policy skip
  int64_t tokens = 0;         // target tokens trained on
  double elapsed_s = 0;       // training wall time over all runs
};

// Everything of a run that a checkpoint holds, by reference into the trainer.
struct TrainingState {
  dist::TrainingParameters& parameters;
  AdamW& optimizer;
  const model::ModelConfig& model_config;  // saved as the HF config, so a checkpoint is a model source
  std::string tokenizer_path;              // copied in ("" = none)
  data::PackedSequenceReader& train_reader;
  TrainingCounters& counters;
  const config::JobConfig& config;
  c10::Device device;        // whose generator is saved beside the CPU's
  int rank = 0;
  bool distributed = false;  // launched: per-rank generator files
};

// Saves checkpoint step `state.counters.step`: this rank's share of the parameters and optimizer and
// its generators; rank 0 also what every rank holds alike. Every rank of `group` calls it. With
// `async`, it returns once the state is snapshotted to host memory (CheckpointManager::save).
std::filesystem::path save_training_state(CheckpointManager& checkpoints, const TrainingState& state,
                                          dist::ProcessGroup* group, bool async = false);
// Loads every part from a complete checkpoint of any layout and world size.
void load_training_state(const std::filesystem::path& step_dir, TrainingState& state);

// The parameters and optimizer alone, into or out of one checkpoint (whole or sharded, as
// `parameters.placement()` says; `rank` is this process's rank in the run).
void save_parameters(CheckpointWriter& writer, const dist::TrainingParameters& parameters, const AdamW& optimizer,
                     int rank);
void load_parameters(const CheckpointReader& reader, dist::TrainingParameters& parameters, AdamW& optimizer);

// A complete checkpoint as a model: its HF config, its master weights (a WeightSource reading any
// range of any parameter from whichever rank's files hold it) and its tokenizer, without the rest
// of the training state.
class CheckpointWeights final : public model::WeightSource {
 public:
  explicit CheckpointWeights(const std::filesystem::path& step_dir);
  ~CheckpointWeights() override;

  model::ModelConfig model_config() const;
  // The tokenizer saved with it, if the run had one.
  std::optional<std::filesystem::path> tokenizer() const;
  // The unit layout and world size a sharded checkpoint was written with; nullopt if saved whole.
  const std::optional<SavedSharding>& sharding() const { return sharding_; }
  // A sharded checkpoint's unit `u` master weights, (numel,), put together from every rank's piece.
  at::Tensor unit(size_t u) const;
  void read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const override;

 private:
  std::filesystem::path step_dir_;
  std::unique_ptr<CheckpointReader> reader_;
  std::optional<SavedSharding> sharding_;
  std::unique_ptr<CheckpointTensors> tensors_;  // over the model's unit layout
};

}  // namespace longtune::trainer
