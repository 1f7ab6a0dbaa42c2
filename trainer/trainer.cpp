#include "trainer/trainer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/progress.h"
#include "data/packed_reader.h"
#include "data/prepared_data.h"
#include "data/tokenizer.h"
#include "model/config.h"
#include "model/hf_checkpoint.h"
#include "model/llama.h"
#include "model/loss.h"
#include "trainer/checkpoint.h"
#include "trainer/device.h"
#include "dist/fsdp.h"
#include "dist/process_group.h"
#include "trainer/sharded_checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/model_source.h"
#include "trainer/optimizer.h"
#include "trainer/stop_signal.h"
#include "dist/training_parameters.h"

namespace longtune::trainer {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Full-precision JSON numbers, so metrics compare bit for bit across runs.
std::string number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "NaN" : (value > 0 ? "Infinity" : "-Infinity");
  return fmt::format("{}", value);
}

// ---- the stateful parts of a checkpoint ----

// Masters and optimizer state (each rank its share), plus, from rank 0, the model's HF config and
// the tokenizer, so a checkpoint is a self-contained model source.
class ParametersPart final : public Stateful {
 public:
  ParametersPart(dist::TrainingParameters& params, AdamW& optimizer, const model::ModelConfig& config,
                 std::string tokenizer_path, bool leader)
      : params_(params), optimizer_(optimizer), config_(config), tokenizer_path_(std::move(tokenizer_path)),
        leader_(leader) {}
  void save(CheckpointWriter& writer) const override {
    params_.save_state(writer, optimizer_);
    if (!leader_) return;
    writer.put_json("model_config", model::model_config_to_hf_json(config_).dump(2));
    if (!tokenizer_path_.empty()) writer.put_file("tokenizer.model", read_file(tokenizer_path_));
  }
  void load(const CheckpointReader& reader) override { params_.load_state(reader, optimizer_); }

 private:
  dist::TrainingParameters& params_;
  AdamW& optimizer_;
  const model::ModelConfig& config_;
  std::string tokenizer_path_;
  bool leader_;
};

class ReaderPart final : public Stateful {
 public:
  explicit ReaderPart(data::PackedSequenceReader& reader) : reader_(reader) {}
  void save(CheckpointWriter& writer) const override { writer.put_json("data", reader_.state().to_json()); }
  void load(const CheckpointReader& reader) override {
    reader_.restore(data::ReaderState::from_json(reader.json("data")));
  }

 private:
  data::PackedSequenceReader& reader_;
};

// Generator states, one file per rank ("rng" alone for a single process). A rank with no saved
// state of its own (resuming under more ranks) keeps its fresh generators.
class RngPart final : public Stateful {
 public:
  RngPart(const c10::Device& device, int rank, bool distributed)
      : device_(device), part_(distributed ? rank_part("rng", rank) : "rng") {}
  void save(CheckpointWriter& writer) const override {
    std::vector<std::pair<std::string, at::Tensor>> states = {{"cpu", generator_state(c10::Device(c10::kCPU))}};
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

struct Counters {
  int64_t step = 0;           // optimizer steps completed
  int64_t skipped_steps = 0;  // steps dropped by nan_policy skip
  int64_t tokens = 0;         // target tokens trained on
  double elapsed_s = 0;       // training wall time over all runs
};

class CountersPart final : public Stateful {
 public:
  explicit CountersPart(Counters& counters) : counters_(counters) {}
  void save(CheckpointWriter& writer) const override {
    nlohmann::ordered_json json = {{"step", counters_.step},
                                   {"skipped_steps", counters_.skipped_steps},
                                   {"tokens", counters_.tokens},
                                   {"elapsed_s", counters_.elapsed_s}};
    writer.put_json("trainer", json.dump(2));
  }
  void load(const CheckpointReader& reader) override {
    const auto json = nlohmann::json::parse(reader.json("trainer"));
    counters_.step = json.at("step").get<int64_t>();
    counters_.skipped_steps = json.at("skipped_steps").get<int64_t>();
    counters_.tokens = json.at("tokens").get<int64_t>();
    counters_.elapsed_s = json.at("elapsed_s").get<double>();
  }

 private:
  Counters& counters_;
};

class ConfigPart final : public Stateful {
 public:
  explicit ConfigPart(const config::JobConfig& config) : config_(config) {}
  void save(CheckpointWriter& writer) const override { writer.put_file("config.resolved.yaml", config::to_yaml(config_)); }
  void load(const CheckpointReader& reader) override {
    if (reader.file("config.resolved.yaml") != config::to_yaml(config_))
      LT_WARN("resuming {} with a job config that differs from the one it was saved with",
              reader.directory().string());
  }

 private:
  const config::JobConfig& config_;
};

}  // namespace

struct Trainer::State {
  const config::JobConfig& config;
  dist::DistEnv dist;
  std::unique_ptr<dist::ProcessGroup> group;  // null for a single process
  c10::Device device{c10::kCPU};
  fs::path run_dir;
  std::unique_ptr<data::PreparedSplit> train_data, validation_data;
  std::unique_ptr<data::PackedSequenceReader> train_reader, validation_reader;
  std::string tokenizer_path;
  model::ModelConfig model_config;
  model::Llama model{nullptr};
  std::unique_ptr<dist::TrainingParameters> params;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<CheckpointManager> checkpoints;
  std::unique_ptr<MetricsLog> metrics;
  Counters counters;
  int grad_accum_steps = 1;
  double flops_per_token = 0;
  double peak_flops = 0;
  int64_t last_saved_step = -1;

  explicit State(const config::JobConfig& c) : config(c) {}

  bool leader() const { return dist.rank == 0; }

  // What this rank saves: its share of the parameters and its generators; rank 0 also the state
  // every rank holds identically (data position, counters, config).
  std::map<std::string, const Stateful*> parts_for_save(std::vector<std::unique_ptr<Stateful>>& owned, bool load) {
    owned.clear();
    std::map<std::string, const Stateful*> parts;
    auto add = [&](const char* name, std::unique_ptr<Stateful> part) {
      parts[name] = part.get();
      owned.push_back(std::move(part));
    };
    add("parameters", std::make_unique<ParametersPart>(*params, *optimizer, model_config, tokenizer_path, leader()));
    add("rng", std::make_unique<RngPart>(device, dist.rank, dist.distributed()));
    if (leader() || load) {
      add("data", std::make_unique<ReaderPart>(*train_reader));
      add("trainer", std::make_unique<CountersPart>(counters));
      add("config", std::make_unique<ConfigPart>(config));
    }
    return parts;
  }

  double sum_over_ranks(double value) const { return group ? all_reduce_sum(*group, value, device) : value; }
};

Trainer::Trainer(const config::JobConfig& config, const dist::DistEnv& dist) : state_(std::make_unique<State>(config)) {
  State& s = *state_;
  s.dist = dist;
  const config::TrainSection& train = config.train;
  LT_CHECK(!config.data.train.empty(), "data.train: a prepared-data directory is required for training "
           "(make one with `longtune prepare-data`)");
  if (train.cpu_threads > 0) at::set_num_threads(static_cast<int>(train.cpu_threads));
  if (train.deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  s.device = pick_device(dist.local_rank);
  s.run_dir = train.run_dir;
  fs::create_directories(s.run_dir);
  if (s.leader()) write_file_atomic(s.run_dir / "config.resolved.yaml", config::to_yaml(config));
  // Any launched process (torchrun, longtune-run, SLURM) runs the sharded path, at world size 1 too,
  // so a one-GPU run exercises NCCL and its checkpoints reshard; a plain process trains unsharded.
  if (dist.source != "single")
    s.group = dist::ProcessGroup::create(dist, s.device, config.parallel.backend,
                                   std::chrono::seconds(config.parallel.collective_timeout_s));

  // Data: the tokenizer the job names (if any) must be the one the data was prepared with.
  std::string tokenizer_sha;
  if (!config.data.tokenizer.empty()) {
    data::Tokenizer tokenizer(config.data.tokenizer);
    tokenizer_sha = tokenizer.sha256();
    s.tokenizer_path = config.data.tokenizer;
  }
  s.train_data = std::make_unique<data::PreparedSplit>(config.data.train, "train", tokenizer_sha);
  const data::TokenizerInfo& vocabulary = s.train_data->manifest().tokenizer;
  if (s.tokenizer_path.empty() && fs::is_regular_file(vocabulary.path)) s.tokenizer_path = vocabulary.path;
  s.train_reader = std::make_unique<data::PackedSequenceReader>(*s.train_data, config.data.seq_len, vocabulary.bos_id,
                                                               vocabulary.eos_id, config.data.seed);
  if (!config.data.validation.empty()) {
    s.validation_data = std::make_unique<data::PreparedSplit>(config.data.validation, "validation", tokenizer_sha);
    s.validation_reader = std::make_unique<data::PackedSequenceReader>(
        *s.validation_data, config.data.seq_len, vocabulary.bos_id, vocabulary.eos_id, config.data.seed);
  }

  // Model: source shapes + the job's RoPE, in the compute dtype of the precision policy.
  at::manual_seed(train.seed);
  const ModelSource source = resolve_model_source(config.model.source);
  s.model_config = job_model_config(config.model, source, config.data.seq_len, vocabulary.vocab_size);
  if (config.data.seq_len > s.model_config.max_position_embeddings)
    LT_WARN("data.seq_len {} exceeds the model's window max_position_embeddings {} (rope {} x{}): training "
            "extrapolates; for PI set model.rope_scaling.factor to seq_len / original window",
            config.data.seq_len, s.model_config.max_position_embeddings,
            model::to_string(s.model_config.rope_scaling.type), s.model_config.rope_scaling.factor);
  s.model = build_model(s.model_config, source, dist::compute_dtype(train.precision));
  s.model->set_activation_checkpointing(config.model.activation_checkpointing);
  s.model->train();
  if (s.group) {
    // The model is still on the host: each unit moves to the device on its own and only this
    // rank's shard stays there, so the device never holds the whole model.
    s.params = std::make_unique<dist::ShardedParameters>(*s.model, train.precision, config.parallel.sharding, *s.group,
                                                   s.device, /*prefetch=*/s.device.is_cuda());
  } else {
    s.model->to(s.device);
    s.params = std::make_unique<dist::LocalParameters>(*s.model, train.precision);
  }
  s.optimizer = std::make_unique<AdamW>(s.params->master(), config.optim);
  s.grad_accum_steps = train.grad_accum_steps(dist.world_size);

  s.checkpoints = std::make_unique<CheckpointManager>(s.run_dir, config.checkpoint.keep_last);
  s.metrics = std::make_unique<MetricsLog>(s.run_dir / "metrics.jsonl", /*enabled=*/s.leader());
  s.flops_per_token = training_flops_per_token(s.model_config, config.data.seq_len);
  s.peak_flops = train.peak_flops > 0 ? train.peak_flops
                                      : default_peak_flops(s.device.is_cuda() ? device_name(s.device) : "",
                                                           train.precision != config::Precision::kFp32);

  LT_INFO("model: {} layers, d={}, heads={} (kv {}), vocab {}, {:.1f}M parameters; window {} (rope {} x{})",
          s.model_config.num_hidden_layers, s.model_config.hidden_size, s.model_config.num_attention_heads,
          s.model_config.num_key_value_heads, s.model_config.vocab_size, s.model_config.num_parameters() / 1e6,
          s.model_config.max_position_embeddings, model::to_string(s.model_config.rope_scaling.type),
          s.model_config.rope_scaling.factor);
  LT_INFO("data: {} train documents, {} tokens -> {} sequences of {}+1 per epoch; device {}; "
          "global batch {} = {} micro x {} accumulation x {} ranks",
          s.train_data->num_documents(), s.train_data->total_tokens(), s.train_reader->samples_per_epoch(),
          config.data.seq_len, device_name(s.device), train.global_batch, train.micro_batch, s.grad_accum_steps,
          dist.world_size);
  if (s.group)
    LT_INFO("sharding: {} over {} ranks ({}), {} units", to_string(config.parallel.sharding), dist.world_size,
            s.group->backend_name(), s.model->num_units());

  const auto resume = s.group ? s.checkpoints->find_resume(config.checkpoint.resume, *s.group)
                              : s.checkpoints->find_resume(config.checkpoint.resume);
  if (resume) {
    std::vector<std::unique_ptr<Stateful>> owned;
    auto saved = s.parts_for_save(owned, /*load=*/true);
    std::map<std::string, Stateful*> parts;
    for (auto& [name, part] : saved) parts[name] = const_cast<Stateful*>(part);
    CheckpointManager::load(*resume, parts);
    s.last_saved_step = s.counters.step;
    LT_INFO("resumed from {} at step {}", resume->string(), s.counters.step);
  }
  if (s.leader()) s.metrics->truncate_after(s.counters.step);
}

Trainer::~Trainer() = default;

int64_t Trainer::step() const { return state_->counters.step; }
const c10::Device& Trainer::device() const { return state_->device; }

StepResult Trainer::train_step() {
  State& s = *state_;
  const config::JobConfig& config = s.config;
  const int64_t seq_len = config.data.seq_len;
  const int64_t micro_batch = config.train.micro_batch;
  const double global_tokens = static_cast<double>(config.train.global_batch) * static_cast<double>(seq_len);

  StepResult result;
  result.lr = learning_rate(config.schedule, config.optim.lr, s.counters.step, config.train.steps);
  const std::vector<uint64_t> batch = s.train_reader->next_global_batch(config.train.global_batch);
  s.params->zero_grad();
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(s.device));
  for (int64_t micro = 0; micro < s.grad_accum_steps; ++micro) {
    s.params->begin_micro_batch(micro + 1 == s.grad_accum_steps);
    const auto ids = data::PackedSequenceReader::micro_batch_ids(batch, s.dist.rank, s.dist.world_size, micro_batch,
                                                                 micro);
    std::vector<int64_t> tokens = s.train_reader->read_samples(ids);
    at::Tensor sequences = at::from_blob(tokens.data(), {static_cast<int64_t>(ids.size()), seq_len + 1}, at::kLong)
                               .to(s.device);  // (B, T+1)
    at::Tensor inputs = sequences.slice(1, 0, seq_len);   // (B, T)
    at::Tensor targets = sequences.slice(1, 1);            // (B, T)
    // Sum over this micro-batch's tokens divided by the whole global batch's token count: the
    // accumulated gradient is exactly the gradient of the global mean.
    at::Tensor nll = model::nll_sum(s.model->forward(inputs), targets);
    if (std::find(config.train.inject_nan_steps.begin(), config.train.inject_nan_steps.end(),
                  s.counters.step + 1) != config.train.inject_nan_steps.end())
      nll = nll * std::numeric_limits<double>::quiet_NaN();
    (nll / global_tokens).backward();
    loss_sum += nll.detach().to(at::kDouble);
  }
  s.params->finish_backward();
  std::vector<at::Tensor> grads;
  for (const auto& [name, param] : s.params->master())
    if (param.grad().defined()) grads.push_back(param.grad());
  result.loss = s.sum_over_ranks(loss_sum.item<double>()) / global_tokens;
  result.grad_norm = clip_grad_norm(grads, config.optim.grad_clip, s.params->grad_norm_reduction());

  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm)) {
    result.skipped = true;
    s.params->zero_grad();
    const std::string what = fmt::format("step {}: non-finite {} (loss {}, grad norm {})", s.counters.step + 1,
                                         std::isfinite(result.loss) ? "gradient" : "loss", number(result.loss),
                                         number(result.grad_norm));
    LT_CHECK(config.train.nan_policy == config::NanPolicy::kSkip,
             "{}; stopping (train.nan_policy: stop). No checkpoint holds this step; the last one is step {}", what,
             s.last_saved_step);
    ++s.counters.skipped_steps;
    LT_CHECK(s.counters.skipped_steps <= config.train.max_skipped_steps,
             "{}; {} steps skipped, over train.max_skipped_steps = {}: stopping", what, s.counters.skipped_steps,
             config.train.max_skipped_steps);
    LT_WARN("{}; update skipped ({} of at most {})", what, s.counters.skipped_steps, config.train.max_skipped_steps);
  } else {
    s.optimizer->step(result.lr);
    s.params->finish_step();
  }
  ++s.counters.step;
  s.counters.tokens += static_cast<int64_t>(global_tokens);
  return result;
}

EvalResult Trainer::evaluate() {
  State& s = *state_;
  EvalResult result;
  if (!s.validation_reader) return result;
  const int64_t seq_len = s.config.data.seq_len;
  const int64_t micro_batch = s.config.train.micro_batch;
  const uint64_t available = s.validation_reader->samples_per_epoch();
  const uint64_t wanted = std::min<uint64_t>(available, s.config.train.eval_batches * micro_batch);
  torch::NoGradGuard no_grad;
  s.model->eval();
  // Rank r scores samples r, r + W, ...; every rank runs the same number of forward passes (their
  // all-gathers are collective), a rank out of samples scoring a placeholder it then ignores.
  const uint64_t world = static_cast<uint64_t>(s.dist.world_size), rank = static_cast<uint64_t>(s.dist.rank);
  std::vector<uint64_t> mine;
  for (uint64_t i = rank; i < wanted; i += world) mine.push_back(i);
  const uint64_t per_rank = (wanted + world - 1) / world;
  double nll = 0;
  int64_t tokens_scored = 0;
  for (uint64_t begin = 0; begin < per_rank; begin += micro_batch) {
    std::vector<uint64_t> ids;
    for (uint64_t k = begin; k < std::min<uint64_t>(mine.size(), begin + micro_batch); ++k)
      ids.push_back(s.validation_reader->sample_at(/*epoch=*/0, mine[k]));  // a fixed held-out set
    const bool placeholder = ids.empty();
    if (placeholder) ids.push_back(s.validation_reader->sample_at(0, 0));
    std::vector<int64_t> tokens = s.validation_reader->read_samples(ids);
    at::Tensor sequences =
        at::from_blob(tokens.data(), {static_cast<int64_t>(ids.size()), seq_len + 1}, at::kLong).to(s.device);
    const double batch_nll =
        model::nll_sum(s.model->forward(sequences.slice(1, 0, seq_len)), sequences.slice(1, 1)).item<double>();
    if (placeholder) continue;
    nll += batch_nll;
    tokens_scored += static_cast<int64_t>(ids.size()) * seq_len;
  }
  nll = s.sum_over_ranks(nll);
  result.tokens = static_cast<int64_t>(s.sum_over_ranks(static_cast<double>(tokens_scored)));
  s.model->train();
  result.loss = result.tokens > 0 ? nll / static_cast<double>(result.tokens) : 0.0;
  result.ppl = std::exp(result.loss);
  return result;
}

void Trainer::save_checkpoint() {
  State& s = *state_;
  std::vector<std::unique_ptr<Stateful>> owned;
  const auto start = Clock::now();
  const fs::path dir = s.checkpoints->save(s.counters.step, s.parts_for_save(owned, /*load=*/false), s.group.get());
  s.last_saved_step = s.counters.step;
  LT_INFO("saved checkpoint {} in {:.2f} s", dir.string(),
          std::chrono::duration<double>(Clock::now() - start).count());
}

RunOutcome Trainer::train() {
  State& s = *state_;
  const config::JobConfig& config = s.config;
  install_stop_handlers();
  ProgressLine progress(/*enabled=*/s.leader());
  const int64_t total = config.train.steps;
  const int64_t first_step = s.counters.step;
  const auto run_start = Clock::now();
  const double elapsed_before = s.counters.elapsed_s;
  auto last = Clock::now();
  EvalResult last_eval;
  if (s.counters.step >= total) LT_INFO("already at step {} of {}: nothing to train", s.counters.step, total);
  while (s.counters.step < total) {
    const StepResult step = train_step();
    synchronize(s.device);
    const auto now = Clock::now();
    const double step_s = std::chrono::duration<double>(now - last).count();
    last = now;
    s.counters.elapsed_s = elapsed_before + std::chrono::duration<double>(now - run_start).count();
    const double tokens_per_s = config.train.global_batch * config.data.seq_len / std::max(step_s, 1e-9);
    const double mfu = s.peak_flops > 0 ? tokens_per_s * s.flops_per_token / s.peak_flops : 0.0;
    const int64_t n = s.counters.step;
    if (n % config.train.log_every == 0 || n == total || step.skipped)
      s.metrics->write(fmt::format(
          "{{\"kind\": \"train\", \"step\": {}, \"loss\": {}, \"lr\": {}, \"grad_norm\": {}, \"tokens\": {}, "
          "\"tokens_per_s\": {:.1f}, \"mfu\": {:.5f}, \"peak_mem_bytes\": {}, \"elapsed_s\": {:.3f}, "
          "\"skipped\": {}}}",
          n, number(step.loss), number(step.lr), number(step.grad_norm), s.counters.tokens, tokens_per_s, mfu,
          peak_memory_bytes(s.device), s.counters.elapsed_s, step.skipped ? "true" : "false"));
    if (config.train.eval_every > 0 && (n % config.train.eval_every == 0 || n == total) && s.validation_reader) {
      last_eval = evaluate();
      s.metrics->write(fmt::format(
          "{{\"kind\": \"eval\", \"step\": {}, \"val_loss\": {}, \"val_ppl\": {}, \"val_tokens\": {}}}", n,
          number(last_eval.loss), number(last_eval.ppl), last_eval.tokens));
      progress.finish();
      LT_INFO("step {}: validation loss {:.4f}, ppl {:.3f} ({} tokens at {})", n, last_eval.loss, last_eval.ppl,
              last_eval.tokens, config.data.seq_len);
    }
    const double per_step = s.counters.elapsed_s / std::max<int64_t>(1, n);
    progress.update(fmt::format("step {}/{} {} loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s | MFU {:.1f}% | "
                                "ETA {}",
                                n, total, ProgressLine::bar(static_cast<double>(n) / total), step.loss, step.lr,
                                step.grad_norm, ProgressLine::count(tokens_per_s), 100 * mfu,
                                ProgressLine::duration(per_step * (total - n))),
                    n == total);
    const bool periodic = config.checkpoint.every > 0 && n % config.checkpoint.every == 0;
    if (periodic || n == total) {
      progress.finish();
      save_checkpoint();
    }
    // Every rank stops at the same step: a signal seen by any rank stops all of them.
    int signal = stop_requested();
    if (s.group && s.sum_over_ranks(signal > 0 ? 1.0 : 0.0) > 0 && signal == 0) signal = SIGTERM;
    if (signal) {
      progress.finish();
      if (s.last_saved_step != n) save_checkpoint();
      LT_WARN("signal {} received: stopped after step {} with a checkpoint; rerun the same command to resume",
              signal, n);
      return RunOutcome::kPreempted;
    }
  }
  progress.finish();
  if (s.counters.step > first_step)
    LT_INFO("trained steps {}..{} in {:.1f} s", first_step + 1, s.counters.step,
            std::chrono::duration<double>(Clock::now() - run_start).count());
  return RunOutcome::kCompleted;
}

}  // namespace longtune::trainer
