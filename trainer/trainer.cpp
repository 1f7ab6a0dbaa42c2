#include "trainer/trainer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <chrono>
#include <cmath>
#include <csignal>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/progress.h"
#include "data/packed_reader.h"
#include "data/prepared_data.h"
#include "data/tokenizer.h"
#include "dist/fsdp.h"
#include "dist/process_group.h"
#include "dist/training_parameters.h"
#include "eval/perplexity.h"
#include "model/config.h"
#include "model/llama.h"
#include "plan/memory_plan.h"
#include "trainer/checkpoint.h"
#include "trainer/device.h"
#include "trainer/metrics.h"
#include "trainer/model_source.h"
#include "trainer/optimizer.h"
#include "trainer/stop_signal.h"
#include "trainer/train_step.h"
#include "trainer/training_state.h"

namespace longtune::trainer {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// ---- the job's settings in the terms dist/ speaks ----

dist::MixedPrecision precision_policy(config::Precision precision) {
  switch (precision) {
    case config::Precision::kFp32: return {at::kFloat, at::kFloat};
    case config::Precision::kBf16Mixed: return {at::kBFloat16, at::kFloat};
    case config::Precision::kBf16: return {at::kBFloat16, at::kBFloat16};
  }
  LT_FAIL("train.precision: unknown value");
}

dist::ShardingStrategy sharding_strategy(config::Sharding sharding) {
  switch (sharding) {
    case config::Sharding::kFullShard: return dist::ShardingStrategy::kFullShard;
    case config::Sharding::kShardGradOp: return dist::ShardingStrategy::kShardGradOp;
    case config::Sharding::kNoShard: return dist::ShardingStrategy::kNoShard;
  }
  LT_FAIL("parallel.sharding: unknown value");
}

dist::ShardingOptions sharding_options(const config::ParallelSection& parallel, const c10::Device& device) {
  dist::ShardingOptions options;
  options.prefetch_depth = static_cast<int>(parallel.prefetch_depth_on(device.is_cuda()));
  options.reductions_in_flight = static_cast<size_t>(parallel.reductions_in_flight);
  options.reduce_dtype = parallel.reduce_dtype == config::Dtype::kBFloat16 ? at::kBFloat16 : at::kFloat;
  return options;
}

dist::Backend process_group_backend(config::Backend backend) {
  switch (backend) {
    case config::Backend::kAuto: return dist::Backend::kAuto;
    case config::Backend::kNccl: return dist::Backend::kNccl;
    case config::Backend::kGloo: return dist::Backend::kGloo;
  }
  LT_FAIL("parallel.backend: unknown value");
}

}  // namespace

void apply_torch_settings(const config::TrainSection& train) {
  if (train.cpu_threads > 0) at::set_num_threads(static_cast<int>(train.cpu_threads));
  if (train.deterministic) at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
}

// Everything a built run holds.
struct Trainer::Run {
  const config::JobConfig& config;
  dist::DistEnv dist;
  StepProbe* probe = nullptr;
  std::unique_ptr<dist::ProcessGroup> group;  // null for a single process
  c10::Device device{c10::kCPU};
  fs::path run_dir;
  std::unique_ptr<data::PreparedSplit> train_data, validation_data;
  std::unique_ptr<data::PackedSequenceReader> train_reader, validation_reader;
  std::string tokenizer_path;
  model::ModelConfig model_config;
  model::Llama model{nullptr};
  std::unique_ptr<dist::TrainingParameters> params;
  std::unique_ptr<model::WeightSource> initial_weights;  // model.source's, until loaded (or resumed over)
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<CheckpointManager> checkpoints;
  std::unique_ptr<MetricsLog> metrics;
  TrainingCounters counters;
  int grad_accum_steps = 1;
  double flops_per_token = 0;
  double peak_flops = 0;
  int64_t last_saved_step = -1;
  fs::path last_checkpoint;  // of the last save, or the one resumed from

  Run(const config::JobConfig& c, const dist::DistEnv& d, StepProbe* p) : config(c), dist(d), probe(p) {}

  bool leader() const { return dist.rank == 0; }
  double sum_over_ranks(double value) const { return group ? dist::all_reduce_sum(*group, value, device) : value; }
  TrainingState state() {
    return TrainingState{*params, *optimizer, model_config, tokenizer_path, *train_reader, counters,
                         config,  device,     dist.rank,    dist.distributed()};
  }

  void open_data();
  void build_model();
  // Plans this rank's memory (plan/memory_plan) before anything is allocated; refuses a job predicted
  // not to fit the device (or the host's available memory per rank) unless train.ignore_plan.
  void check_memory_plan(const ModelSource& source) const;
  // This rank's micro-batches of the next global batch, on the device, (B, T+1) each.
  std::vector<at::Tensor> next_micro_batches();
  // A skipped step under train.nan_policy: counted, or the end of the run (an error naming it).
  void apply_nan_policy(const StepResult& step);
};

void Trainer::Run::open_data() {
  // The tokenizer the job names (if any) must be the one the data was prepared with.
  std::string tokenizer_sha;
  if (!config.data.tokenizer.empty()) {
    data::Tokenizer tokenizer(config.data.tokenizer);
    tokenizer_sha = tokenizer.sha256();
    tokenizer_path = config.data.tokenizer;
  }
  train_data = std::make_unique<data::PreparedSplit>(config.data.train, "train", tokenizer_sha);
  const data::TokenizerInfo& vocabulary = train_data->manifest().tokenizer;
  if (tokenizer_path.empty() && fs::is_regular_file(vocabulary.path)) tokenizer_path = vocabulary.path;
  train_reader = std::make_unique<data::PackedSequenceReader>(*train_data, config.data.seq_len, vocabulary.bos_id,
                                                              vocabulary.eos_id, config.data.seed);
  if (!config.data.validation.empty()) {
    validation_data = std::make_unique<data::PreparedSplit>(config.data.validation, "validation", tokenizer_sha);
    validation_reader = std::make_unique<data::PackedSequenceReader>(
        *validation_data, config.data.seq_len, vocabulary.bos_id, vocabulary.eos_id, config.data.seed);
  }
}

void Trainer::Run::build_model() {
  // Source shapes + the job's RoPE, in the compute dtype of the precision policy.
  const config::TrainSection& train = config.train;
  const dist::MixedPrecision precision = precision_policy(train.precision);
  at::manual_seed(train.seed);
  const ModelSource source = resolve_model_source(config.model.source);
  model_config = job_model_config(config.model, source, config.data.seq_len,
                                  train_data->manifest().tokenizer.vocab_size);
  if (config.data.seq_len > model_config.max_position_embeddings)
    LT_WARN("data.seq_len {} exceeds the model's window max_position_embeddings {} (rope {} x{}): training "
            "extrapolates; for PI set model.rope_scaling.factor to seq_len / original window",
            config.data.seq_len, model_config.max_position_embeddings,
            model::to_string(model_config.rope_scaling.type), model_config.rope_scaling.factor);
  check_memory_plan(source);
  // Checked against the model before anything is allocated.
  initial_weights = open_weights(source, model_config, train.seed);
  if (group) {
    // No memory for the whole model anywhere: the sharding gives each parameter a view of its
    // unit's buffer on the device, and each rank reads only its shard of the weights.
    model = model::Llama(model_config, model::ParameterOptions{model::ParameterInit::kHollow, precision.param_dtype});
    params = std::make_unique<dist::ShardedParameters>(*model, precision, sharding_strategy(config.parallel.sharding),
                                                       *group, device, sharding_options(config.parallel, device));
  } else {
    model = model::Llama(model_config,
                         model::ParameterOptions{model::ParameterInit::kEmpty, precision.param_dtype, device});
    params = std::make_unique<dist::LocalParameters>(*model, precision);
  }
  model->set_activation_checkpointing(config.model.activation_checkpointing);
  model->train();
  optimizer = std::make_unique<AdamW>(params->master(), config.optim);
}

void Trainer::Run::check_memory_plan(const ModelSource& source) const {
  const plan::DeviceKind kind = device.is_cuda() ? plan::DeviceKind::kCuda : plan::DeviceKind::kCpu;
  const plan::PlanInputs inputs = plan::plan_inputs(config, model_config, dist.world_size, dist.local_world_size,
                                                    group != nullptr, kind, source_weight_file_bytes(source));
  const plan::MemoryPlan plan = plan::plan_memory(inputs);
  const int64_t device_capacity = device_total_memory(device);
  // What is free now, plus what this process already holds (the plan counts its runtime too).
  const int64_t host_capacity =
      host_available_memory() / std::max(1, dist.local_world_size) + peak_memory(device).host_bytes;
  plan::PlanVerdict verdict = plan::check_fit(plan, kind, device_capacity, host_capacity);
  // Every rank decides the same, so none is left waiting in a collective for one that refused.
  if (group && dist::all_reduce_max(*group, verdict.fits ? 0 : 1, device) != 0 && verdict.fits) {
    verdict.fits = false;
    verdict.reason = "the memory plan of another rank (see its log) predicts it does not fit";
  }
  const int64_t capacity = kind == plan::DeviceKind::kCuda ? device_capacity : host_capacity;
  const std::string table = plan::plan_table(plan, inputs, verdict, capacity);
  if (!verdict.fits && !config.train.ignore_plan)
    LT_FAIL("the memory plan predicts this job does not fit: {} (set train.ignore_plan=true to train anyway)\n{}",
            verdict.reason, table);
  if (!verdict.fits) LT_WARN("the memory plan predicts this job does not fit: {}; training anyway", verdict.reason);
  if (leader()) LT_INFO("{}", table);
}

std::vector<at::Tensor> Trainer::Run::next_micro_batches() {
  const int64_t seq_len = config.data.seq_len;
  const std::vector<uint64_t> batch = train_reader->next_global_batch(config.train.global_batch);
  std::vector<at::Tensor> micro_batches;
  for (int64_t micro = 0; micro < grad_accum_steps; ++micro) {
    const auto ids = data::PackedSequenceReader::micro_batch_ids(batch, dist.rank, dist.world_size,
                                                                 config.train.micro_batch, micro);
    std::vector<int64_t> tokens = train_reader->read_samples(ids);
    // A copy even on the CPU: `tokens` is gone by the time the step reads the batch.
    micro_batches.push_back(at::from_blob(tokens.data(), {static_cast<int64_t>(ids.size()), seq_len + 1}, at::kLong)
                                .to(device, /*non_blocking=*/false, /*copy=*/true));
  }
  return micro_batches;
}

Trainer::Trainer(const config::JobConfig& config, const dist::DistEnv& dist, StepProbe* probe)
    : run_(std::make_unique<Run>(config, dist, probe)) {
  Run& r = *run_;
  const config::TrainSection& train = config.train;
  LT_CHECK(!config.data.train.empty(), "data.train: a prepared-data directory is required for training "
           "(make one with `longtune prepare-data`)");
  r.device = pick_device(dist.local_rank);
  r.run_dir = train.run_dir;
  fs::create_directories(r.run_dir);
  if (r.leader()) write_file_atomic(r.run_dir / resolved_config_name(), config::to_yaml(config));
  // Any launched process (torchrun, longtune-run, SLURM) runs the sharded path, at world size 1 too,
  // so a one-GPU run exercises NCCL and its checkpoints reshard; a plain process trains unsharded.
  if (dist.source != "single")
    r.group = dist::ProcessGroup::create(dist, r.device, process_group_backend(config.parallel.backend),
                                         std::chrono::seconds(config.parallel.collective_timeout_s));
  r.open_data();
  r.build_model();
  r.grad_accum_steps = train.grad_accum_steps(dist.world_size);
  r.checkpoints = std::make_unique<CheckpointManager>(r.run_dir, config.checkpoint.keep_last);
  r.metrics = std::make_unique<MetricsLog>(r.run_dir / metrics_file_name(), /*enabled=*/r.leader());
  r.flops_per_token = training_flops_per_token(r.model_config, config.data.seq_len);
  r.peak_flops = train.peak_flops > 0 ? train.peak_flops
                                      : default_peak_flops(r.device.is_cuda() ? device_name(r.device) : "",
                                                           train.precision != config::Precision::kFp32);

  const model::ModelConfig& m = r.model_config;
  LT_INFO("model: {} layers, d={}, heads={} (kv {}), vocab {}, {:.1f}M parameters; window {} (rope {} x{})",
          m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.vocab_size,
          m.num_parameters() / 1e6, m.max_position_embeddings, model::to_string(m.rope_scaling.type),
          m.rope_scaling.factor);
  LT_INFO("data: {} train documents, {} tokens -> {} sequences of {}+1 per epoch; device {}; "
          "global batch {} = {} micro x {} accumulation x {} ranks",
          r.train_data->num_documents(), r.train_data->total_tokens(), r.train_reader->samples_per_epoch(),
          config.data.seq_len, device_name(r.device), train.global_batch, train.micro_batch, r.grad_accum_steps,
          dist.world_size);
  if (r.group)
    LT_INFO("sharding: {} over {} ranks ({}), {} units", config::to_string(config.parallel.sharding),
            dist.world_size, r.group->backend_name(), r.model->num_units());

  const auto resume = r.group ? r.checkpoints->find_resume(config.checkpoint.resume, *r.group)
                              : r.checkpoints->find_resume(config.checkpoint.resume);
  if (resume) {
    TrainingState state = r.state();
    load_training_state(*resume, state);
    r.last_saved_step = r.counters.step;
    r.last_checkpoint = *resume;
    LT_INFO("resumed from {} at step {}", resume->string(), r.counters.step);
  } else {
    dist::load_weights(*r.params, *r.initial_weights);
  }
  r.initial_weights.reset();  // unmaps the source's files
  if (r.leader()) r.metrics->truncate_after(r.counters.step);
}

Trainer::~Trainer() = default;

int64_t Trainer::step() const { return run_->counters.step; }
const c10::Device& Trainer::device() const { return run_->device; }

std::vector<EvalResult> Trainer::evaluate() {
  if (!run_->validation_reader) return {};
  if (run_->config.eval.protocol == config::EvalProtocol::kPacked) return {evaluate_packed()};
  return evaluate_sliding();
}

std::vector<EvalResult> Trainer::evaluate_sliding() {
  Run& r = *run_;
  const config::EvalSection& eval = r.config.eval;
  eval::PerplexityOptions options;
  options.mode = data::EvalMode::kSlidingWindow;
  options.batch = r.config.train.micro_batch;  // windows of one length per forward
  options.documents = {static_cast<uint64_t>(eval.max_documents), static_cast<uint64_t>(eval.min_document_tokens),
                       static_cast<uint64_t>(eval.truncate_tokens)};
  options.bos_id = r.validation_data->bos_id();
  options.loss_chunk_rows = r.config.train.loss_chunk_tokens;
  options.lockstep = r.group != nullptr;  // a sharded forward gathers units: every rank runs as many
  options.progress = false;
  std::vector<EvalResult> results;
  for (const int64_t window : eval.windows.empty() ? std::vector{r.config.data.seq_len} : eval.windows) {
    options.window = window;
    options.stride = eval.stride_at(window);
    eval::PerplexityPartial partial =
        eval::evaluate_perplexity_partial(*r.model, *r.validation_data, options, r.dist.rank, r.dist.world_size);
    if (r.group) partial = eval::PerplexityPartial::from_sums(dist::all_reduce_sum(*r.group, partial.sums(), r.device));
    const eval::PerplexityResult total = eval::finalize_perplexity(partial);
    results.push_back({total.mean_window_nll, total.ppl, total.scored_tokens, window});
  }
  return results;
}

EvalResult Trainer::evaluate_packed() {
  Run& r = *run_;
  EvalResult result;
  result.window = r.config.data.seq_len;
  const int64_t seq_len = r.config.data.seq_len;
  const int64_t micro_batch = r.config.train.micro_batch;
  const uint64_t available = r.validation_reader->samples_per_epoch();
  const uint64_t wanted = std::min<uint64_t>(available, r.config.train.eval_batches * micro_batch);
  torch::NoGradGuard no_grad;
  r.model->eval();
  // Rank r scores samples r, r + W, ...; every rank runs the same number of forward passes (their
  // all-gathers are collective), a rank out of samples scoring a placeholder it then ignores.
  const uint64_t world = static_cast<uint64_t>(r.dist.world_size), rank = static_cast<uint64_t>(r.dist.rank);
  std::vector<uint64_t> mine;
  for (uint64_t i = rank; i < wanted; i += world) mine.push_back(i);
  const uint64_t per_rank = (wanted + world - 1) / world;
  double nll = 0;
  int64_t tokens_scored = 0;
  for (uint64_t begin = 0; begin < per_rank; begin += micro_batch) {
    std::vector<uint64_t> ids;
    for (uint64_t k = begin; k < std::min<uint64_t>(mine.size(), begin + micro_batch); ++k)
      ids.push_back(r.validation_reader->sample_at(/*epoch=*/0, mine[k]));  // a fixed held-out set
    const bool placeholder = ids.empty();
    if (placeholder) ids.push_back(r.validation_reader->sample_at(0, 0));
    std::vector<int64_t> tokens = r.validation_reader->read_samples(ids);
    at::Tensor sequences =
        at::from_blob(tokens.data(), {static_cast<int64_t>(ids.size()), seq_len + 1}, at::kLong).to(r.device);
    const double batch_nll =
        r.model->token_nll(sequences.slice(1, 0, seq_len), sequences.slice(1, 1), r.config.train.loss_chunk_tokens)
            .sum()
            .item<double>();
    if (placeholder) continue;
    nll += batch_nll;
    tokens_scored += static_cast<int64_t>(ids.size()) * seq_len;
  }
  nll = r.sum_over_ranks(nll);
  result.tokens = static_cast<int64_t>(r.sum_over_ranks(static_cast<double>(tokens_scored)));
  r.model->train();
  result.loss = result.tokens > 0 ? nll / static_cast<double>(result.tokens) : 0.0;
  result.ppl = std::exp(result.loss);
  return result;
}

void Trainer::save_checkpoint() {
  Run& r = *run_;
  const auto start = Clock::now();
  const bool async = r.config.checkpoint.async_save;
  // Waits for the previous save first (an asynchronous one's error surfaces here).
  const fs::path dir = save_training_state(*r.checkpoints, r.state(), r.group.get(), async);
  r.last_saved_step = r.counters.step;
  r.last_checkpoint = dir;
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (async)
    LT_INFO("checkpoint {}: state snapshotted in {:.2f} s, writing in the background", dir.string(), seconds);
  else
    LT_INFO("saved checkpoint {} in {:.2f} s", dir.string(), seconds);
}

void Trainer::wait_for_checkpoint() { run_->checkpoints->wait(); }

const fs::path& Trainer::last_checkpoint() const { return run_->last_checkpoint; }

void Trainer::Run::apply_nan_policy(const StepResult& step) {
  const std::string what = fmt::format("step {}: non-finite {} (loss {}, grad norm {})", counters.step + 1,
                                       std::isfinite(step.loss) ? "gradient" : "loss", metric_number(step.loss),
                                       metric_number(step.grad_norm));
  LT_CHECK(config.train.nan_policy == config::NanPolicy::kSkip,
           "{}; stopping (train.nan_policy: stop). No checkpoint holds this step; the last one is step {}", what,
           last_saved_step);
  ++counters.skipped_steps;
  LT_CHECK(counters.skipped_steps <= config.train.max_skipped_steps,
           "{}; {} steps skipped, over train.max_skipped_steps = {}: stopping", what, counters.skipped_steps,
           config.train.max_skipped_steps);
  LT_WARN("{}; update skipped ({} of at most {})", what, counters.skipped_steps, config.train.max_skipped_steps);
}

void Trainer::report_step(const StepResult& step, double tokens_per_s, ProgressLine& progress) {
  Run& r = *run_;
  const config::JobConfig& config = r.config;
  const int64_t n = r.counters.step, total = config.train.steps;
  const double mfu = r.peak_flops > 0 ? tokens_per_s * r.flops_per_token / r.peak_flops : 0.0;
  if (n % config.train.log_every == 0 || n == total || step.skipped) {
    MemoryPeaks peaks = peak_memory(r.device);
    if (r.group) {
      peaks.host_bytes = dist::all_reduce_max(*r.group, peaks.host_bytes, r.device);
      peaks.device_bytes = dist::all_reduce_max(*r.group, peaks.device_bytes, r.device);
    }
    r.metrics->write(TrainRecord{n, step.loss, step.lr, step.grad_norm, r.counters.tokens, tokens_per_s, mfu,
                                 peaks.host_bytes, peaks.device_bytes, r.counters.elapsed_s, step.skipped});
  }
  if (config.train.eval_every > 0 && (n % config.train.eval_every == 0 || n == total) && r.validation_reader) {
    const std::vector<EvalResult> results = evaluate();
    progress.finish();
    for (const EvalResult& eval : results) {
      r.metrics->write(EvalRecord{n, eval.loss, eval.ppl, eval.tokens, eval.window});
      LT_INFO("step {}: validation {} at {}: ppl {:.3f}, loss {:.4f} ({} tokens)", n, to_string(config.eval.protocol),
              eval.window, eval.ppl, eval.loss, eval.tokens);
    }
  }
  const double per_step = r.counters.elapsed_s / std::max<int64_t>(1, n);
  progress.update(fmt::format("step {}/{} {} loss {:.4f} | lr {:.2e} | gnorm {:.3f} | {} tok/s | MFU {:.1f}% | ETA {}",
                              n, total, ProgressLine::bar(static_cast<double>(n) / total), step.loss, step.lr,
                              step.grad_norm, ProgressLine::count(tokens_per_s), 100 * mfu,
                              ProgressLine::duration(per_step * (total - n))),
                  n == total);
}

RunOutcome Trainer::train() {
  Run& r = *run_;
  const config::JobConfig& config = r.config;
  install_stop_handlers();
  ProgressLine progress(/*enabled=*/r.leader());
  const int64_t total = config.train.steps;
  const int64_t first_step = r.counters.step;
  const auto run_start = Clock::now();
  const double elapsed_before = r.counters.elapsed_s;
  const double global_tokens = static_cast<double>(config.train.global_batch) * static_cast<double>(config.data.seq_len);
  auto last = Clock::now();
  if (r.counters.step >= total) LT_INFO("already at step {} of {}: nothing to train", r.counters.step, total);
  while (r.counters.step < total) {
    StepOptions options;
    options.step = r.counters.step + 1;
    options.lr = learning_rate(config.schedule, config.optim.lr, r.counters.step, total);
    options.grad_clip = config.optim.grad_clip;
    options.global_tokens = global_tokens;
    options.loss_chunk_rows = config.train.loss_chunk_tokens;
    options.group = r.group.get();
    options.probe = r.probe;
    const StepResult step = train_step(*r.model, *r.params, *r.optimizer, r.next_micro_batches(), options);
    if (step.skipped) r.apply_nan_policy(step);
    ++r.counters.step;
    r.counters.tokens += static_cast<int64_t>(global_tokens);
    synchronize(r.device);
    const auto now = Clock::now();
    const double step_s = std::chrono::duration<double>(now - last).count();
    last = now;
    r.counters.elapsed_s = elapsed_before + std::chrono::duration<double>(now - run_start).count();
    report_step(step, global_tokens / std::max(step_s, 1e-9), progress);
    const int64_t n = r.counters.step;
    const bool periodic = config.checkpoint.every > 0 && n % config.checkpoint.every == 0;
    if (periodic || n == total) {
      progress.finish();
      save_checkpoint();
    }
    // Every rank stops at the same step: a signal seen by any rank stops all of them.
    int signal = stop_requested();
    if (r.group && r.sum_over_ranks(signal > 0 ? 1.0 : 0.0) > 0 && signal == 0) signal = SIGTERM;
    if (signal) {
      progress.finish();
      if (r.last_saved_step != n) save_checkpoint();
      wait_for_checkpoint();  // exit only with the checkpoint in place
      LT_WARN("signal {} received: stopped after step {} with a checkpoint; rerun the same command to resume",
              signal, n);
      return RunOutcome::kPreempted;
    }
  }
  progress.finish();
  wait_for_checkpoint();  // the last checkpoint is complete on disk when train() returns
  if (r.counters.step > first_step)
    LT_INFO("trained steps {}..{} in {:.1f} s", first_step + 1, r.counters.step,
            std::chrono::duration<double>(Clock::now() - run_start).count());
  return RunOutcome::kCompleted;
}

}  // namespace longtune::trainer
