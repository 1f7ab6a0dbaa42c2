#include "trainer/training_state.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/autograd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/json_value.h"
#include "common/file_io.h"
#include "common/log.h"
#include "data/packed_reader.h"
#include "dist/training_parameters.h"
#include "model/hf_checkpoint.h"
#include "model/llama.h"
#include "trainer/checkpoint.h"
#include "trainer/device.h"
#include "trainer/optimizer.h"
#include "data/tokenizer.h"

namespace longtune::trainer {
namespace fs = std::filesystem;
using dist::FlatParam;
using dist::FlatUnit;
using Named = std::vector<std::pair<std::string, at::Tensor>>;

// ---- every name inside a checkpoint directory ----

namespace {

constexpr const char* kCompleteMarker = "COMPLETE";
constexpr const char* kResolvedConfigFile = "config.resolved.yaml";
constexpr const char* kWeightsPart = "model";         // master weights: model.safetensors, model.rankRRRRR...
constexpr const char* kOptimizerPart = "optimizer";   // AdamW moments and step: optimizer[.rankRRRRR].safetensors
constexpr const char* kShardingPart = "sharding";     // sharding.json: the unit layout of a sharded save
constexpr const char* kModelConfigPart = "model_config";  // model_config.json: the HF config.json
constexpr const char* kReaderPart = "data";           // data.json: the training reader's position
constexpr const char* kCountersPart = "trainer";      // trainer.json: TrainingCounters
constexpr const char* kRngPart = "rng";               // rng[.rankRRRRR].safetensors: generator states
constexpr const char* kStepTensor = "step";           // AdamW's step count, in every optimizer part

// "model.rank00003"
std::string rank_part(const std::string& part, int rank) { return fmt::format("{}.rank{:05d}", part, rank); }

// Moments are keyed "<moment>/<parameter or unit>", weights by the name alone.
std::string moment_key(Moment moment, const std::string& name) { return fmt::format("{}/{}", to_string(moment), name); }

const StateFiles& weight_files() {
  static const StateFiles files{kWeightsPart, [](int r) { return rank_part(kWeightsPart, r); },
                                [](const std::string& name) { return name; }};
  return files;
}

const StateFiles& moment_files(Moment moment) {
  static const auto make = [](Moment m) {
    return StateFiles{kOptimizerPart, [](int r) { return rank_part(kOptimizerPart, r); },
                      [m](const std::string& name) { return moment_key(m, name); }};
  };
  static const StateFiles exp_avg = make(Moment::kExpAvg), exp_avg_sq = make(Moment::kExpAvgSq);
  return moment == Moment::kExpAvg ? exp_avg : exp_avg_sq;
}

std::optional<SavedSharding> read_sharding(const CheckpointReader& reader) {
  if (!reader.has_part(kShardingPart)) return std::nullopt;
  SavedSharding saved;
  saved.source = (reader.directory() / (std::string(kShardingPart) + ".json")).string();
  saved.layout = dist::layout_from_json(reader.json(kShardingPart), saved.source, &saved.world_size);
  return saved;
}

at::Tensor saved_step(const CheckpointReader& reader, bool sharded) {
  return reader.tensor(sharded ? rank_part(kOptimizerPart, 0) : kOptimizerPart, kStepTensor);
}

}  // namespace

const char* complete_marker_name() { return kCompleteMarker; }
const char* resolved_config_name() { return kResolvedConfigFile; }

// ---- parameters and optimizer ----

void save_parameters(CheckpointWriter& writer, const dist::TrainingParameters& parameters, const AdamW& optimizer,
                     int rank) {
  const dist::MasterPlacement where = parameters.placement();
  const Named& masters = parameters.master();
  const std::vector<FlatUnit>& layout = parameters.layout();
  Named weights, moments;
  if (!where.unit_shards) {
    // Whole parameters (one process): saved as they are.
    weights = masters;
    for (size_t i = 0; i < masters.size(); ++i)
      for (const Moment m : kMoments) moments.emplace_back(moment_key(m, masters[i].first), optimizer.moment(m, i));
  } else if (!where.distinct) {
    // Every rank holds all of every unit (no_shard): rank 0 writes the single-process layout.
    if (rank != 0) return;
    for (size_t u = 0; u < layout.size(); ++u)
      for (const FlatParam& p : layout[u].params)
        weights.emplace_back(p.name, masters[u].second.detach().narrow(0, p.offset, p.numel).view(p.shape));
    for (size_t u = 0; u < layout.size(); ++u)
      for (const Moment m : kMoments)
        for (const FlatParam& p : layout[u].params)
          moments.emplace_back(moment_key(m, p.name), optimizer.moment(m, u).narrow(0, p.offset, p.numel).view(p.shape));
  } else {
    // This rank's piece of every unit, without the padding past the end of the flat vector.
    for (size_t u = 0; u < layout.size(); ++u) {
      const FlatUnit& unit = layout[u];
      const int64_t valid = unit.shard_end(where.shard, where.shards) - unit.shard_begin(where.shard, where.shards);
      weights.emplace_back(unit.name, masters[u].second.detach().narrow(0, 0, valid));
      for (const Moment m : kMoments) moments.emplace_back(moment_key(m, unit.name), optimizer.moment(m, u).narrow(0, 0, valid));
    }
  }
  moments.emplace_back(kStepTensor, optimizer.step_count());
  if (where.distinct) {
    writer.put_tensors(rank_part(kWeightsPart, where.shard), weights);
    writer.put_tensors(rank_part(kOptimizerPart, where.shard), moments);
    if (where.shard == 0) writer.put_json(kShardingPart, dist::layout_to_json(layout, where.shards));
  } else {
    writer.put_tensors(kWeightsPart, weights);
    writer.put_tensors(kOptimizerPart, moments);
  }
}

void load_parameters(const CheckpointReader& reader, dist::TrainingParameters& parameters, AdamW& optimizer) {
  torch::NoGradGuard no_grad;
  const CheckpointTensors saved(reader, parameters.layout(), read_sharding(reader));
  const dist::MasterPlacement where = parameters.placement();
  const Named& masters = parameters.master();
  const at::Tensor step = saved_step(reader, saved.sharded());
  if (!where.unit_shards) {
    parameters.load_masters([&](size_t i) { return saved.whole(weight_files(), masters[i].first); });
    optimizer.load_state(step, [&](Moment m, size_t i) { return saved.whole(moment_files(m), masters[i].first); });
    return;
  }
  // This rank's shard of unit u, padded with zeros past the end of the flat vector.
  const auto shard_of = [&](const StateFiles& kind, size_t u) {
    const FlatUnit& unit = parameters.layout()[u];
    const int64_t begin = unit.shard_begin(where.shard, where.shards), end = unit.shard_end(where.shard, where.shards);
    at::Tensor shard = at::zeros({unit.shard_numel(where.shards)}, at::TensorOptions().dtype(masters[u].second.scalar_type()));
    if (end > begin) shard.narrow(0, 0, end - begin).copy_(saved.flat_range(kind, u, begin, end));
    return shard;
  };
  parameters.load_masters([&](size_t u) { return shard_of(weight_files(), u); });
  optimizer.load_state(step, [&](Moment m, size_t u) { return shard_of(moment_files(m), u); });
}

// ---- the stateful parts of a run ----

namespace {

// Masters and optimizer state (each rank its share), plus, from rank 0, the model's HF config and
// the tokenizer, so a checkpoint is a self-contained model source.
class ParametersPart final : public Stateful {
 public:
  explicit ParametersPart(const TrainingState& state) : state_(state) {}
  void save(CheckpointWriter& writer) const override {
    save_parameters(writer, state_.parameters, state_.optimizer, state_.rank);
    if (state_.rank != 0) return;
    writer.put_json(kModelConfigPart, model::model_config_to_hf_json(state_.model_config).dump(2));
    // The tokenizer under HF's name for its kind (tokenizer.model or tokenizer.json), with its config files.
    if (!state_.tokenizer_path.empty()) {
      const std::vector<fs::path> files = data::tokenizer_files(data::resolve_tokenizer_file(state_.tokenizer_path));
      writer.put_file(data::hf_tokenizer_file_name(files[0]), read_file(files[0]));
      for (size_t i = 1; i < files.size(); ++i) writer.put_file(files[i].filename().string(), read_file(files[i]));
    }
  }
  void load(const CheckpointReader& reader) override { load_parameters(reader, state_.parameters, state_.optimizer); }

 private:
  const TrainingState& state_;
};

class ReaderPart final : public Stateful {
 public:
  explicit ReaderPart(data::PackedSequenceReader& reader) : reader_(reader) {}
  void save(CheckpointWriter& writer) const override { writer.put_json(kReaderPart, reader_.state().to_json()); }
  void load(const CheckpointReader& reader) override {
    reader_.restore(data::ReaderState::from_json(reader.json(kReaderPart)));
  }

 private:
  data::PackedSequenceReader& reader_;
};

// Generator states, one file per rank (one without a rank for a single process). A rank with no
// saved state of its own (resuming under more ranks) keeps its fresh generators.
class RngPart final : public Stateful {
 public:
  RngPart(const c10::Device& device, int rank, bool distributed)
      : device_(device), part_(distributed ? rank_part(kRngPart, rank) : kRngPart) {}
  void save(CheckpointWriter& writer) const override {
    Named states = {{"cpu", generator_state(c10::Device(c10::kCPU))}};
    if (device_.is_cuda()) states.emplace_back("cuda", generator_state(device_));
    writer.put_tensors(part_, states);
  }
  void load(const CheckpointReader& reader) override {
    if (!reader.has_part(part_)) {
      LT_WARN("{}: no generator state for {} (saved with another world size); generators start fresh",
              reader.directory().string(), part_);
      return;
    }
    set_generator_state(c10::Device(c10::kCPU), reader.tensor(part_, "cpu"));
    if (device_.is_cuda()) {
      const auto names = reader.tensor_names(part_);
      if (std::find(names.begin(), names.end(), "cuda") != names.end())
        set_generator_state(device_, reader.tensor(part_, "cuda"));
      else
        LT_WARN("{}: no CUDA generator state (saved on CPU); the CUDA RNG starts fresh",
                reader.directory().string());
    }
  }

 private:
  c10::Device device_;
  std::string part_;
};

class CountersPart final : public Stateful {
 public:
  explicit CountersPart(TrainingCounters& counters) : counters_(counters) {}
  void save(CheckpointWriter& writer) const override {
    nlohmann::ordered_json json = {{"step", counters_.step},
                                   {"skipped_steps", counters_.skipped_steps},
                                   {"tokens", counters_.tokens},
                                   {"elapsed_s", counters_.elapsed_s}};
    writer.put_json(kCountersPart, json.dump(2));
  }
  void load(const CheckpointReader& reader) override {
    const auto json = nlohmann::json::parse(reader.json(kCountersPart));
    const std::string where = (reader.directory() / (std::string(kCountersPart) + ".json")).string();
    counters_.step = json_value<int64_t>(json.at("step"), where + ": step");
    counters_.skipped_steps = json_value<int64_t>(json.at("skipped_steps"), where + ": skipped_steps");
    counters_.tokens = json_value<int64_t>(json.at("tokens"), where + ": tokens");
    counters_.elapsed_s = json_value<double>(json.at("elapsed_s"), where + ": elapsed_s");
  }

 private:
  TrainingCounters& counters_;
};

class ConfigPart final : public Stateful {
 public:
  explicit ConfigPart(const config::JobConfig& config) : config_(config) {}
  void save(CheckpointWriter& writer) const override { writer.put_file(kResolvedConfigFile, config::to_yaml(config_)); }
  // Resuming with changed settings is allowed (a longer run, a new learning rate); say which changed.
  void load(const CheckpointReader& reader) override {
    const std::string saved = reader.file(kResolvedConfigFile);
    if (saved == config::to_yaml(config_)) return;
    const std::string source = (reader.directory() / kResolvedConfigFile).string();
    std::vector<std::string> changes;
    try {
      changes = config::differing_settings(config::parse_job_config_string(saved, source), config_);
    } catch (const Error& e) {
      LT_WARN("resuming {} with a job config that differs from the one it was saved with (which does not read as "
              "a job of this version: {})", reader.directory().string(), e.what());
      return;
    }
    if (!changes.empty())
      LT_WARN("resuming {} with a job config that differs from the one it was saved with: {}",
              reader.directory().string(), fmt::join(changes, "; "));
  }

 private:
  const config::JobConfig& config_;
};

// What this rank saves or loads, by part name (for messages): its share of the parameters and its
// generators; rank 0 saves the state every rank holds alike (data position, counters, config),
// which every rank loads.
struct Parts {
  std::vector<std::unique_ptr<Stateful>> owned;
  std::map<std::string, Stateful*> by_name;
  Parts(const TrainingState& state, bool loading) {
    add("parameters", std::make_unique<ParametersPart>(state));
    add("rng", std::make_unique<RngPart>(state.device, state.rank, state.distributed));
    if (state.rank == 0 || loading) {
      add("data", std::make_unique<ReaderPart>(state.train_reader));
      add("trainer", std::make_unique<CountersPart>(state.counters));
      add("config", std::make_unique<ConfigPart>(state.config));
    }
  }
  void add(const char* name, std::unique_ptr<Stateful> part) {
    by_name[name] = part.get();
    owned.push_back(std::move(part));
  }
};

}  // namespace

fs::path save_training_state(CheckpointManager& checkpoints, const TrainingState& state, dist::ProcessGroup* group,
                             bool async) {
  // The parts only live through this call: an asynchronous save snapshots them before returning.
  const Parts parts(state, /*loading=*/false);
  std::map<std::string, const Stateful*> to_save(parts.by_name.begin(), parts.by_name.end());
  return checkpoints.save(state.counters.step, to_save, group, async ? SaveMode::kAsync : SaveMode::kSync);
}

void load_training_state(const fs::path& step_dir, TrainingState& state) {
  const Parts parts(state, /*loading=*/true);
  CheckpointManager::load(step_dir, parts.by_name);
}

// ---- a checkpoint as a model ----

CheckpointWeights::CheckpointWeights(const fs::path& step_dir)
    : step_dir_(step_dir), reader_(std::make_unique<CheckpointReader>(step_dir)), sharding_(read_sharding(*reader_)) {
  model::Llama shapes(model_config(), model::ParameterOptions{model::ParameterInit::kHollow});
  tensors_ = std::make_unique<CheckpointTensors>(*reader_, dist::flat_units(*shapes), sharding_);
}

CheckpointWeights::~CheckpointWeights() = default;

model::ModelConfig CheckpointWeights::model_config() const {
  const fs::path file = step_dir_ / (std::string(kModelConfigPart) + ".json");
  return model::model_config_from_hf_json(nlohmann::json::parse(reader_->json(kModelConfigPart)), file.string());
}

std::optional<fs::path> CheckpointWeights::tokenizer() const {
  return data::find_tokenizer_file(step_dir_);
}

at::Tensor CheckpointWeights::unit(size_t u) const {
  LT_CHECK(sharding_.has_value(), "checkpoint {}: saved whole, not in units", step_dir_.string());
  return tensors_->flat_range(weight_files(), u, 0, sharding_->layout.at(u).numel);
}

void CheckpointWeights::read(const std::string& name, int64_t begin, int64_t end, const at::Tensor& out) const {
  const std::vector<FlatUnit>& layout = tensors_->layout();
  for (size_t u = 0; u < layout.size(); ++u)
    for (const FlatParam& p : layout[u].params) {
      if (p.name != name) continue;
      LT_CHECK(begin >= 0 && begin <= end && end <= p.numel && out.numel() == end - begin,
               "checkpoint {}: range [{}, {}) of '{}' ({} elements) into {} elements", step_dir_.string(), begin, end,
               name, p.numel, out.numel());
      torch::NoGradGuard no_grad;
      const_cast<at::Tensor&>(out).copy_(tensors_->flat_range(weight_files(), u, p.offset + begin, p.offset + end));
      return;
    }
  LT_FAIL("checkpoint {}: the model has no parameter '{}'", step_dir_.string(), name);
}

}  // namespace longtune::trainer
