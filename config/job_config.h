// The training job as plain typed data: what a job file under configs/ says, every field with its
// default. Loading (YAML plus `--set section.key=value` overrides), validation with
// `file:line:column: key: message` errors, and printing live here. Each section's keys are listed
// once, in Fields<Section> below, and parsing, printing and comparing all walk that list, so a key
// the job file accepts is always written to config.resolved.yaml and checked on resume. Not the
// network's shape (that is model/config.h, whose RopeScaling the `model.rope_scaling` section
// fills); no torch, no yaml-cpp.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "model/config.h"

namespace longtune::config {

enum class Dtype { kFloat32, kBFloat16 };            // "float32" | "bfloat16"
enum class Precision { kFp32, kBf16Mixed, kBf16 };   // "fp32" | "bf16_mixed" | "bf16"
enum class LrDecay { kConstant, kCosine, kLinear };  // "constant" | "cosine" | "linear"
enum class NanPolicy { kStop, kSkip };               // "stop" | "skip"
enum class Sharding { kFullShard, kShardGradOp, kNoShard };  // "full_shard" | "shard_grad_op" | "no_shard"
enum class Backend { kAuto, kNccl, kGloo };          // "auto" | "nccl" | "gloo"
enum class EvalProtocol { kSliding, kPacked };       // "sliding" | "packed"

// The names above, as written in job files.
std::string to_string(Dtype value);
std::string to_string(Precision value);
std::string to_string(LrDecay value);
std::string to_string(NanPolicy value);
std::string to_string(Sharding value);
std::string to_string(Backend value);
std::string to_string(EvalProtocol value);

// `model:` what to train and how the network computes.
struct ModelSection {
  std::string source = "preset:tiny";     // "preset:<name>" | HF model directory | longtune checkpoint
  Dtype dtype = Dtype::kFloat32;          // compute dtype; must agree with train.precision
  bool activation_checkpointing = false;  // recompute each block's activations in backward
  std::optional<double> rope_theta;       // RoPE base override; unset: the model's own
  model::RopeScaling rope_scaling;        // position scaling (PI: type linear, factor L'/L)

  // "tiny" for source "preset:tiny"; nullopt when the source is a path.
  std::optional<std::string> preset_name() const;
};

// `data:` prepared token data.
struct DataSection {
  std::string train;       // prepared-data directory for training ("" = none)
  std::string validation;  // prepared-data directory for validation ("" = none)
  std::string tokenizer;   // tokenizer path (SentencePiece model; "" = the model's own)
  int64_t seq_len = 256;   // tokens per training sequence, L' (2 .. 1048576)
  uint64_t seed = 0;       // data sampling/order seed
};

// `optim:` AdamW.
struct OptimSection {
  double lr = 2e-5;            // peak learning rate (> 0)
  double beta1 = 0.9;          // AdamW beta1, [0, 1)
  double beta2 = 0.95;         // AdamW beta2, [0, 1)
  double eps = 1e-8;           // AdamW epsilon (> 0)
  double weight_decay = 0.0;   // decoupled weight decay (>= 0)
  double grad_clip = 1.0;      // max global gradient L2 norm (>= 0; 0 disables)
  bool fused = true;           // use the fused AdamW kernel where available
};

// `schedule:` learning-rate schedule.
struct ScheduleSection {
  int64_t warmup_steps = 20;           // optimizer steps of linear warmup (>= 0)
  double warmup_start_factor = 0.1;    // lr multiplier at step 0 of warmup, (0, 1]
  LrDecay decay = LrDecay::kConstant;  // shape after warmup
  double min_lr_factor = 0.0;          // final lr multiplier for cosine/linear decay, [0, 1]
};

// `train:` the loop.
struct TrainSection {
  int64_t steps = 1000;                     // optimizer steps (> 0)
  int64_t global_batch = 64;                // sequences per optimizer step, all ranks together
  int64_t micro_batch = 1;                  // sequences per forward/backward, per rank
  Precision precision = Precision::kFp32;   // fp32 | bf16 compute with fp32 master weights | all bf16
  int64_t log_every = 1;                    // steps between log lines (> 0)
  int64_t eval_every = 0;                   // steps between validation passes (0 disables; see eval:)
  int64_t eval_batches = 8;                 // eval.protocol packed: micro-batches per pass (> 0)
  uint64_t seed = 0;                        // initialization/dropout seed
  NanPolicy nan_policy = NanPolicy::kStop;  // on a non-finite loss or gradient: stop or skip the step
  int64_t max_skipped_steps = 10;           // with nan_policy skip: give up after this many (>= 0)
  std::string run_dir = "runs/default";     // output directory (logs, checkpoints, resolved config)
  bool deterministic = false;               // deterministic kernels (slower)
  double peak_flops = 0;                    // device peak FLOP/s for MFU (0: known GPU table or CPU measured)
  int64_t cpu_threads = 0;                  // intra-op CPU threads (0: LibTorch's default, all cores)
  int64_t loss_chunk_tokens = 1024;         // positions per chunk of the fused head + loss (>= 64)
  bool ignore_plan = false;                 // train even if the memory plan predicts it does not fit

  // Gradient-accumulation micro-steps per optimizer step on `world_size` ranks; throws
  // longtune::Error naming train.global_batch unless global_batch % (micro_batch * world_size) == 0.
  int grad_accum_steps(int world_size) const;
};

// `checkpoint:` saving and resuming.
struct CheckpointSection {
  int64_t every = 100;            // steps between checkpoints (0: only at the end)
  int64_t keep_last = 2;          // checkpoints kept on disk (>= 1)
  std::string resume = "auto";    // "auto" (latest in run_dir, if any) | "never" | checkpoint path
  bool export_hf_at_end = false;  // also write an HF model directory after the last step
  bool async_save = true;         // snapshot to host memory, write on a background thread
};

// `parallel:` data parallelism.
struct ParallelSection {
  Sharding sharding = Sharding::kFullShard;  // FSDP-style sharding of params/grads/optimizer state
  Backend backend = Backend::kAuto;          // process group; auto: nccl on GPU, gloo on CPU
  int64_t collective_timeout_s = 600;        // seconds before a hung collective fails (> 0)
  // Units whose all-gather is issued before they run, in forward and backward; -1: auto (1 on a GPU,
  // where NCCL overlaps it with compute; 0 on the CPU, where Gloo's threads would take compute's cores).
  int64_t prefetch_depth = -1;
  int64_t reductions_in_flight = 2;          // gradient reduce-scatters outstanding at most (>= 1)
  Dtype reduce_dtype = Dtype::kFloat32;      // gradients summed over ranks in this (micro-batches: in fp32)

  // prefetch_depth with auto resolved for a run on a GPU (`cuda`) or the CPU.
  int64_t prefetch_depth_on(bool cuda) const { return prefetch_depth >= 0 ? prefetch_depth : (cuda ? 1 : 0); }
};

// `eval:` the validation run every train.eval_every steps. sliding: the paper's protocol
// (eval/perplexity.h) over whole documents of data.validation, one metrics record per window;
// packed: the loss of train.eval_batches packed training-style sequences at data.seq_len.
struct EvalSection {
  EvalProtocol protocol = EvalProtocol::kSliding;
  std::vector<int64_t> windows;  // context windows in tokens (empty: just data.seq_len)
  int64_t stride = 256;          // tokens the window advances per step (in [1, window - 1])
  double stride_fraction = 0;    // in (0, 1): the stride is this share of each window instead
  int64_t max_documents = 0;     // the first N validation documents selected (0: all)
  int64_t min_document_tokens = 0;  // only documents of at least this many tokens
  int64_t truncate_tokens = 0;      // each document read to its first N tokens (0: whole)

  // The stride used at `window`.
  int64_t stride_at(int64_t window) const;
};

struct JobConfig {
  ModelSection model;            // what to train
  DataSection data;              // token data
  OptimSection optim;            // AdamW
  ScheduleSection schedule;      // lr schedule
  TrainSection train;            // the loop
  CheckpointSection checkpoint;  // saving/resuming
  ParallelSection parallel;      // data parallelism
  EvalSection eval;              // perplexity evaluation

  // For error messages only (ignored by ==, not written by to_yaml): the file or source name the
  // config came from ("" if built in code) and, per dotted key, "file:line:col" or "--set k=v".
  std::string source;
  std::map<std::string, std::string> origins;

  // Range and cross-field checks; throws longtune::Error "<where>: <dotted key>: <problem>".
  void validate() const;
  // Compares every setting in the field lists; ignores source and origins.
  bool operator==(const JobConfig& other) const;
};

// ---- the field lists ----
// Fields<S>::visit(v) calls v("key", &S::member) for every key of section S, in job-file order. A
// member that has a Fields list of its own is a nested section (`model.rope_scaling`). A member
// missing here would be neither read, written nor compared, so job_config.cpp does not build then.
template <class Section>
struct Fields;

template <>
struct Fields<model::RopeScaling> {
  using S = model::RopeScaling;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("type", &S::type);
    v("factor", &S::factor);
    v("original_max_position_embeddings", &S::original_max_position_embeddings);
    v("attention_factor", &S::attention_factor);
    v("beta_fast", &S::beta_fast);
    v("beta_slow", &S::beta_slow);
    v("mscale", &S::mscale);
    v("mscale_all_dim", &S::mscale_all_dim);
    v("truncate", &S::truncate);
    v("low_freq_factor", &S::low_freq_factor);
    v("high_freq_factor", &S::high_freq_factor);
  }
};

template <>
struct Fields<ModelSection> {
  using S = ModelSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("source", &S::source);
    v("dtype", &S::dtype);
    v("activation_checkpointing", &S::activation_checkpointing);
    v("rope_theta", &S::rope_theta);
    v("rope_scaling", &S::rope_scaling);
  }
};

template <>
struct Fields<DataSection> {
  using S = DataSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("train", &S::train);
    v("validation", &S::validation);
    v("tokenizer", &S::tokenizer);
    v("seq_len", &S::seq_len);
    v("seed", &S::seed);
  }
};

template <>
struct Fields<OptimSection> {
  using S = OptimSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("lr", &S::lr);
    v("beta1", &S::beta1);
    v("beta2", &S::beta2);
    v("eps", &S::eps);
    v("weight_decay", &S::weight_decay);
    v("grad_clip", &S::grad_clip);
    v("fused", &S::fused);
  }
};

template <>
struct Fields<ScheduleSection> {
  using S = ScheduleSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("warmup_steps", &S::warmup_steps);
    v("warmup_start_factor", &S::warmup_start_factor);
    v("decay", &S::decay);
    v("min_lr_factor", &S::min_lr_factor);
  }
};

template <>
struct Fields<TrainSection> {
  using S = TrainSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("steps", &S::steps);
    v("global_batch", &S::global_batch);
    v("micro_batch", &S::micro_batch);
    v("precision", &S::precision);
    v("log_every", &S::log_every);
    v("eval_every", &S::eval_every);
    v("eval_batches", &S::eval_batches);
    v("seed", &S::seed);
    v("nan_policy", &S::nan_policy);
    v("max_skipped_steps", &S::max_skipped_steps);
    v("run_dir", &S::run_dir);
    v("deterministic", &S::deterministic);
    v("peak_flops", &S::peak_flops);
    v("cpu_threads", &S::cpu_threads);
    v("loss_chunk_tokens", &S::loss_chunk_tokens);
    v("ignore_plan", &S::ignore_plan);
  }
};

template <>
struct Fields<CheckpointSection> {
  using S = CheckpointSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("every", &S::every);
    v("keep_last", &S::keep_last);
    v("resume", &S::resume);
    v("export_hf_at_end", &S::export_hf_at_end);
    v("async_save", &S::async_save);
  }
};

template <>
struct Fields<ParallelSection> {
  using S = ParallelSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("sharding", &S::sharding);
    v("backend", &S::backend);
    v("collective_timeout_s", &S::collective_timeout_s);
    v("prefetch_depth", &S::prefetch_depth);
    v("reductions_in_flight", &S::reductions_in_flight);
    v("reduce_dtype", &S::reduce_dtype);
  }
};

template <>
struct Fields<EvalSection> {
  using S = EvalSection;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("protocol", &S::protocol);
    v("windows", &S::windows);
    v("stride", &S::stride);
    v("stride_fraction", &S::stride_fraction);
    v("max_documents", &S::max_documents);
    v("min_document_tokens", &S::min_document_tokens);
    v("truncate_tokens", &S::truncate_tokens);
  }
};

// The sections of a job file; source and origins are bookkeeping, not settings.
template <>
struct Fields<JobConfig> {
  using S = JobConfig;
  template <class Visit>
  static constexpr void visit(Visit&& v) {
    v("model", &S::model);
    v("data", &S::data);
    v("optim", &S::optim);
    v("schedule", &S::schedule);
    v("train", &S::train);
    v("checkpoint", &S::checkpoint);
    v("parallel", &S::parallel);
    v("eval", &S::eval);
  }
};

// Reads a job file, applies `section.key=value` overrides, parses strictly and validates.
JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text; `source_name` stands in for the file name in messages.
JobConfig parse_job_config_string(const std::string& yaml_text,
                                  const std::string& source_name = "<string>",
                                  const std::vector<std::string>& overrides = {});

// The resolved config, every field included, as YAML that load_job_config reads back equal.
std::string to_yaml(const JobConfig& config);
// An aligned "dotted.key  value" listing, one setting per line, for printing at start.
std::string to_table(const JobConfig& config);
// One "dotted.key: saved -> current" line per setting that differs (values as to_table prints
// them), in field-list order; empty when saved == current. Tells a resumed run what changed.
std::vector<std::string> differing_settings(const JobConfig& saved, const JobConfig& current);

}  // namespace longtune::config
