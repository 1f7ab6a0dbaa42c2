// Tests for the job config (config/job_config.h) and its YAML reader: defaults, type/range/unknown-key
// errors with file:line:column, `--set` overrides, grad_accum_steps, to_yaml round trips, that parse,
// print and compare agree on every key, differing_settings, and that every job file under configs/
// loads and validates. Fast and CPU-only; no torch tensors involved.
#include "config/job_config.h"
#include "model/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <utility>

#include "common/check.h"
#include "config/yaml_reader.h"

namespace longtune::config {
namespace {

JobConfig parse(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  return parse_job_config_string(yaml, "test.yaml", overrides);
}

// The message of the longtune::Error that parsing `yaml` throws ("" and a test failure if none).
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse(yaml, overrides);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error for:\n" << yaml;
  return "";
}

void expect_error(const std::string& yaml, std::initializer_list<std::string> parts,
                  const std::vector<std::string>& overrides = {}) {
  const std::string message = error_of(yaml, overrides);
  for (const auto& part : parts) {
    EXPECT_NE(message.find(part), std::string::npos) << "missing '" << part << "' in: " << message;
  }
}

TEST(JobConfig, EmptyDocumentGivesDefaults) {
  const JobConfig c = parse("");
  EXPECT_EQ(c, JobConfig{});
  EXPECT_EQ(parse("{}"), JobConfig{});
  EXPECT_EQ(parse("optim:\nmodel:\n  rope_scaling:\n"), JobConfig{});
  EXPECT_EQ(c.model.source, "preset:tiny");
  EXPECT_EQ(c.model.preset_name(), "tiny");
  EXPECT_EQ(c.model.rope_scaling.type, model::RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.optim.lr, 2e-5);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.95);
  EXPECT_EQ(c.schedule.warmup_steps, 20);
  EXPECT_DOUBLE_EQ(c.schedule.warmup_start_factor, 0.1);
  EXPECT_EQ(c.train.steps, 1000);
  EXPECT_EQ(c.train.global_batch, 64);
  EXPECT_EQ(c.train.run_dir, "runs/default");
  EXPECT_EQ(c.parallel.collective_timeout_s, 600);
  EXPECT_EQ(c.parallel.prefetch_depth_on(/*cuda=*/true), 1);
  EXPECT_EQ(c.parallel.prefetch_depth_on(/*cuda=*/false), 0);
  EXPECT_EQ(c.parallel.reductions_in_flight, 2);
  EXPECT_EQ(c.parallel.reduce_dtype, Dtype::kFloat32);
  EXPECT_EQ(c.eval.stride, 256);
  EXPECT_NO_THROW(JobConfig{}.validate());
}

TEST(JobConfig, ReadsEverySection) {
  const JobConfig c = parse(R"(
model:
  source: /models/llama-7b-hf
  dtype: bfloat16
  activation_checkpointing: true
  rope_theta: 500000
  rope_scaling: {type: linear, factor: 4, original_max_position_embeddings: 2048}
data: {train: /d/train, validation: /d/val, tokenizer: /t.model, seq_len: 8192, seed: 18446744073709551615}
optim: {lr: 1.0e-5, weight_decay: 0.1, fused: false}
schedule: {decay: cosine, min_lr_factor: 0.1}
train: {precision: bf16_mixed, nan_policy: skip, deterministic: True}
checkpoint: {resume: /runs/x/step_100, export_hf_at_end: true}
parallel: {sharding: shard_grad_op, backend: nccl, prefetch_depth: 2, reductions_in_flight: 3, reduce_dtype: bfloat16}
eval: {windows: [2048, 8192], stride: 128}
)");
  EXPECT_EQ(c.model.source, "/models/llama-7b-hf");
  EXPECT_FALSE(c.model.preset_name());
  EXPECT_EQ(c.model.dtype, Dtype::kBFloat16);
  EXPECT_EQ(c.model.rope_theta, 500000.0);
  EXPECT_EQ(c.model.rope_scaling.type, model::RopeType::kLinear);
  EXPECT_EQ(c.model.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.model.rope_scaling.original_max_position_embeddings, 2048);
  EXPECT_EQ(c.data.seed, UINT64_MAX);
  EXPECT_EQ(c.data.seq_len, 8192);
  EXPECT_DOUBLE_EQ(c.optim.lr, 1e-5);
  EXPECT_FALSE(c.optim.fused);
  EXPECT_EQ(c.schedule.decay, LrDecay::kCosine);
  EXPECT_EQ(c.train.precision, Precision::kBf16Mixed);
  EXPECT_EQ(c.train.nan_policy, NanPolicy::kSkip);
  EXPECT_TRUE(c.train.deterministic);
  EXPECT_EQ(c.parallel.sharding, Sharding::kShardGradOp);
  EXPECT_EQ(c.parallel.backend, Backend::kNccl);
  EXPECT_EQ(c.parallel.prefetch_depth_on(/*cuda=*/false), 2);
  EXPECT_EQ(c.parallel.reductions_in_flight, 3);
  EXPECT_EQ(c.parallel.reduce_dtype, Dtype::kBFloat16);
  EXPECT_EQ(c.eval.windows, (std::vector<int64_t>{2048, 8192}));
  EXPECT_EQ(c.origins.at("optim.lr"), "test.yaml:9:13");
}

TEST(JobConfig, CheckpointAsyncSaveDefaultsOnAndReadsAsABool) {
  EXPECT_TRUE(JobConfig{}.checkpoint.async_save);
  EXPECT_FALSE(parse("checkpoint:\n  async_save: false\n").checkpoint.async_save);
  expect_error("checkpoint:\n  async_save: later\n",
               {"test.yaml:2:15: checkpoint.async_save: expected true or false, got \"later\""});
  JobConfig synchronous;
  synchronous.checkpoint.async_save = false;
  EXPECT_EQ(differing_settings(JobConfig{}, synchronous),
            std::vector<std::string>{"checkpoint.async_save: true -> false"});
}

TEST(JobConfig, TypeErrorsNameFileLineColumnAndKey) {
  expect_error("optim:\n  lr: abc\n", {"test.yaml:2:7: optim.lr: expected a finite number, got \"abc\""});
  expect_error("optim: [1, 2]\n", {"test.yaml:1:8: optim: expected a mapping, got a list"});
  expect_error("model:\n  rope_scaling: linear\n", {"test.yaml:2:17: model.rope_scaling: expected a mapping"});
  expect_error("train:\n  steps: 2.5\n", {"test.yaml:2:10: train.steps: expected an integer, got 2.5"});
  expect_error("train:\n  steps: 1e3\n", {"train.steps: expected an integer, got 1e3"});
  expect_error("train:\n  steps: 99999999999999999999\n", {"train.steps: expected an integer"});
  expect_error("data:\n  seed: -3\n", {"test.yaml:2:9: data.seed: expected a non-negative integer, got -3"});
  expect_error("optim:\n  fused: yes\n", {"test.yaml:2:10: optim.fused: expected true or false, got \"yes\""});
  expect_error("optim:\n  fused: 1\n", {"optim.fused: expected true or false, got 1"});
  expect_error("optim:\n  lr: \"2e-5\"\n",
               {"optim.lr: expected a finite number, got the string \"2e-5\" (remove the quotes)"});
  expect_error("optim:\n  lr: .nan\n", {"optim.lr: expected a finite number"});
  expect_error("train:\n  run_dir: [a, b]\n", {"test.yaml:2:12: train.run_dir: expected a string, got a list"});
  expect_error("train:\n  steps:\n", {"test.yaml:2:3: train.steps: expected an integer, got null"});
  expect_error("data:\n  seq_len: {a: 1}\n", {"data.seq_len: expected an integer, got a mapping"});
  expect_error("eval:\n  windows: [128, x]\n",
               {"test.yaml:2:18: eval.windows[1]: expected an integer, got \"x\""});
  expect_error("eval:\n  windows: 128\n", {"eval.windows: expected a list of integers, got 128"});
  expect_error("- a\n- b\n", {"test.yaml:1:1: expected a mapping of sections at the top level, got a list"});
  expect_error("model:\n  rope_scaling:\n    truncate: maybe\n",
               {"test.yaml:3:15: model.rope_scaling.truncate"});
}

TEST(JobConfig, ChoiceErrorsListTheChoices) {
  expect_error("train:\n  precision: bf16mixed\n",
               {"test.yaml:2:14: train.precision: expected one of fp32, bf16_mixed, bf16; got \"bf16mixed\" "
                "(did you mean 'bf16_mixed'?)"});
  expect_error("model:\n  rope_scaling:\n    type: lineal\n",
               {"test.yaml:3:11: model.rope_scaling.type: expected one of default, linear, dynamic, yarn, "
                "llama3; got \"lineal\" (did you mean 'linear'?)"});
  expect_error("parallel:\n  backend: mpi\n",
               {"parallel.backend: expected one of auto, nccl, gloo; got \"mpi\""});
}

TEST(JobConfig, RangeErrorsNameTheAllowedRange) {
  expect_error("optim:\n  lr: -1\n", {"test.yaml:2:7: optim.lr: must be > 0, got -1"});
  expect_error("optim:\n  beta1: 1.0\n", {"test.yaml:2:10: optim.beta1: must be in [0, 1), got 1"});
  expect_error("optim:\n  weight_decay: -0.1\n", {"optim.weight_decay: must be >= 0, got -0.1"});
  expect_error("schedule:\n  warmup_start_factor: 0\n",
               {"schedule.warmup_start_factor: must be in (0, 1], got 0"});
  expect_error("data:\n  seq_len: 1\n",
               {"test.yaml:2:12: data.seq_len: must be in [2, 1048576] tokens, got 1"});
  expect_error("train:\n  steps: 0\n", {"test.yaml:2:10: train.steps: must be > 0, got 0"});
  expect_error("checkpoint:\n  keep_last: 0\n", {"checkpoint.keep_last: must be > 0, got 0"});
  expect_error("parallel:\n  collective_timeout_s: -5\n", {"parallel.collective_timeout_s: must be > 0"});
  expect_error("parallel:\n  prefetch_depth: -2\n",
               {"parallel.prefetch_depth: must be in [0, 8] units, or -1 for auto, got -2"});
  expect_error("parallel:\n  reductions_in_flight: 0\n", {"parallel.reductions_in_flight: must be in [1, 16], got 0"});
  expect_error("parallel:\n  reduce_dtype: fp16\n",
               {"parallel.reduce_dtype: expected one of float32, bfloat16; got \"fp16\""});
  expect_error("train:\n  max_skipped_steps: -1\n", {"train.max_skipped_steps: must be >= 0, got -1"});
  expect_error("eval:\n  windows: [512, 1]\n",
               {"test.yaml:2:12: eval.windows: window 1 is outside [2, 1048576]"});
}

TEST(JobConfig, CrossFieldErrors) {
  expect_error("train:\n  global_batch: 64\n  micro_batch: 3\n",
               {"test.yaml:2:17: train.global_batch: 64 is not divisible by train.micro_batch (3)"});
  expect_error("model:\n  rope_scaling:\n    type: linear\n    factor: 0.5\n",
               {"test.yaml:4:13: model.rope_scaling.factor: must be >= 1 for type linear"});
  expect_error("model:\n  rope_scaling:\n    factor: 4\n",
               {"model.rope_scaling.factor: is 4 but type is default"});
  // The pretrained window and llama3's band come from the model when unset (model::with_rope_scaling).
  EXPECT_NO_THROW(parse("model:\n  rope_scaling:\n    type: yarn\n    factor: 4\n"));
  expect_error("model:\n  rope_scaling: {type: llama3, factor: 8, low_freq_factor: 4, high_freq_factor: 1}\n",
               {"model.rope_scaling.high_freq_factor: must be > low_freq_factor (4), got 1"});
  expect_error("model:\n  dtype: bfloat16\n",
               {"test.yaml:2:10: model.dtype: bfloat16 contradicts train.precision fp32"});
  expect_error("model:\n  source: preset:tiyn\n",
               {"test.yaml:2:11: model.source: unknown preset 'tiyn' (did you mean 'tiny'?)"});
  expect_error("model:\n  source: \"\"\n", {"model.source: must not be empty"});
  expect_error("eval:\n  windows: [128]\n  stride: 256\n",
               {"test.yaml:3:11: eval.stride: 256 exceeds the evaluation window 128"});
  expect_error("checkpoint:\n  resume: \"\"\n", {"checkpoint.resume: must be"});
  // A sliding validation needs stride <= W - 1 at every window (a fraction below 1 always is).
  expect_error("train:\n  eval_every: 5\neval:\n  windows: [128, 256]\n  stride: 128\n",
               {"eval.stride: the stride 128 must be below the evaluation window 128"});
  EXPECT_NO_THROW(parse("train:\n  eval_every: 5\neval:\n  windows: [2, 256]\n  stride: 512\n  stride_fraction: 0.5\n"));
  EXPECT_NO_THROW(parse("train:\n  eval_every: 5\neval:\n  protocol: packed\n  windows: [128]\n  stride: 128\n"));
  expect_error("eval:\n  stride_fraction: 1.0\n", {"eval.stride_fraction: must be in [0, 1)"});
  expect_error("eval:\n  truncate_tokens: -1\n", {"eval.truncate_tokens"});
  expect_error("eval:\n  protocol: chunks\n", {"eval.protocol", "sliding", "packed"});
  EXPECT_EQ(parse("eval:\n  stride_fraction: 0.5\n").eval.stride_at(32768), 16384);
  EXPECT_EQ(parse("eval:\n  stride: 100\n").eval.stride_at(32768), 100);
}

TEST(JobConfig, UnknownKeysSuggestTheClosestKnownKey) {
  expect_error("optimm:\n  lr: 1\n", {"test.yaml:1:1: unknown key 'optimm' (did you mean 'optim'?)"});
  expect_error("optim:\n  lrr: 1\n", {"test.yaml:2:3: unknown key 'optim.lrr' (did you mean 'lr'?)"});
  expect_error("model:\n  rope_scaling:\n    factr: 2\n",
               {"test.yaml:3:5: unknown key 'model.rope_scaling.factr' (did you mean 'factor'?)"});
  expect_error("schedule:\n  warmup: 5\n", {"unknown key 'schedule.warmup' (did you mean 'warmup_steps'?)"});
  expect_error("train:\n  zzz: 1\n", {"unknown key 'train.zzz' (known keys: steps, global_batch,"});
  expect_error("optim:\n  lr: 1.0e-4\n  lr: 2.0e-4\n", {"test.yaml:3:3: duplicate key 'optim.lr'"});
}

TEST(DidYouMean, DistanceAndPrefix) {
  const std::vector<std::string> keys{"steps", "global_batch", "micro_batch", "seed"};
  EXPECT_EQ(did_you_mean("step", keys), "steps");
  EXPECT_EQ(did_you_mean("micro", keys), "micro_batch");
  EXPECT_EQ(did_you_mean("sed", keys), "seed");
  EXPECT_FALSE(did_you_mean("learning_rate", keys));
}

TEST(JobConfig, SyntaxErrorsAndMissingFilesNameTheFile) {
  expect_error("optim:\n  lr: 1\n  windows: [1, 2\ntrain: {}\n", {"test.yaml:4:", "invalid YAML"});
  expect_error("optim:\n  lr: 1\n   beta1: 2\n", {"test.yaml:3:", "invalid YAML"});
  try {
    load_job_config("/nonexistent/job.yaml");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/job.yaml: cannot open"), std::string::npos) << e.what();
  }
}

TEST(JobConfig, OverridesApplyBeforeParsing) {
  const std::string file = "optim:\n  lr: 1.0e-4\nmodel:\n  rope_scaling:\n    type: linear\n";
  const JobConfig c = parse(file, {"optim.lr=3e-4", "model.rope_scaling.factor=4", "optim.fused=false",
                                   "eval.windows=[128, 256]", "eval.stride=64", "train.run_dir=runs/x=1",
                                   "model.rope_theta=null", "data.tokenizer="});
  EXPECT_DOUBLE_EQ(c.optim.lr, 3e-4);
  EXPECT_EQ(c.model.rope_scaling.type, model::RopeType::kLinear);
  EXPECT_EQ(c.model.rope_scaling.factor, 4.0);
  EXPECT_FALSE(c.optim.fused);
  EXPECT_EQ(c.eval.windows, (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(c.train.run_dir, "runs/x=1");
  EXPECT_FALSE(c.model.rope_theta);
  EXPECT_EQ(c.origins.at("optim.lr"), "--set optim.lr=3e-4");
  // A whole section as a flow mapping, and later overrides win.
  const JobConfig d =
      parse("", {"model.rope_scaling={type: linear, factor: 2}", "model.rope_scaling.factor=8"});
  EXPECT_EQ(d.model.rope_scaling.factor, 8.0);
}

TEST(JobConfig, OverrideErrorsNameTheSetFlag) {
  expect_error("optim:\n  lr: 1\n",
               {"--set optim.lrr=1: unknown key 'optim.lrr' (did you mean 'lr'?)"}, {"optim.lrr=1"});
  expect_error("", {"--set optimm.lr=1: unknown key 'optimm' (did you mean 'optim'?)"}, {"optimm.lr=1"});
  expect_error("",
               {"--set model.rope_scaling.factr=4: unknown key 'model.rope_scaling.factr' "
                "(did you mean 'factor'?)"},
               {"model.rope_scaling.factr=4"});
  expect_error("", {"--set optim.lr=abc: optim.lr: expected a finite number, got \"abc\""}, {"optim.lr=abc"});
  expect_error("", {"--set train.steps=0: train.steps: must be > 0, got 0"}, {"train.steps=0"});
  expect_error("", {"--set optim.lr: expected section.key=value"}, {"optim.lr"});
  expect_error("", {"--set =1: expected section.key=value"}, {"=1"});
  expect_error("", {"--set optim..lr=1: empty component"}, {"optim..lr=1"});
  expect_error("",
               {"--set optim.lr.x=1: 'optim.lr' is not a section (it holds 2)"},
               {"optim.lr=2", "optim.lr.x=1"});
  expect_error("", {"--set eval.windows=[1,: invalid YAML value: "}, {"eval.windows=[1,"});
}

TEST(TrainSection, GradAccumSteps) {
  TrainSection t;
  t.global_batch = 64;
  t.micro_batch = 2;
  EXPECT_EQ(t.grad_accum_steps(1), 32);
  EXPECT_EQ(t.grad_accum_steps(4), 8);
  EXPECT_EQ(t.grad_accum_steps(32), 1);
  try {
    t.grad_accum_steps(3);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train.global_batch: 64 is not divisible by train.micro_batch (2) x "
                                         "world size (3) = 6"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(t.grad_accum_steps(64), Error);
  EXPECT_THROW(t.grad_accum_steps(0), Error);
}

JobConfig everything_changed() {
  JobConfig c;
  c.model.source = "/models/with \"quotes\": and #hash";
  c.model.dtype = Dtype::kBFloat16;
  c.model.activation_checkpointing = true;
  c.model.rope_theta = 500000.5;
  model::RopeScaling& r = c.model.rope_scaling;
  r.type = model::RopeType::kLlama3;
  r.factor = 8;
  r.original_max_position_embeddings = 8192;
  r.attention_factor = 1.25;
  r.beta_fast = 33;
  r.beta_slow = 1.5;
  r.mscale = 0.7;
  r.mscale_all_dim = 0.8;
  r.truncate = false;
  r.low_freq_factor = 1;
  r.high_freq_factor = 4;
  c.data = {"null", "123", "tab\there", 4096, 18446744073709551615ull};
  c.optim = {3.0000000000000001e-4, 0.8, 0.999, 1e-6, 0.1, 0.0, false};
  c.schedule = {7, 1.0, LrDecay::kLinear, 0.05};
  c.train.steps = 12;
  c.train.global_batch = 48;
  c.train.micro_batch = 3;
  c.train.precision = Precision::kBf16;
  c.train.log_every = 5;
  c.train.eval_every = 6;
  c.train.eval_batches = 2;
  c.train.seed = 42;
  c.train.nan_policy = NanPolicy::kSkip;
  c.train.max_skipped_steps = 0;
  c.train.run_dir = "runs/round trip";
  c.train.deterministic = true;
  c.checkpoint = {0, 5, "never", true, false};
  c.parallel = {Sharding::kNoShard, Backend::kGloo, 30};
  c.eval = {EvalProtocol::kPacked, {4096, 8192}, 1024, 0.25, 3, 100, 5000};
  return c;
}

TEST(JobConfig, ToYamlRoundTrips) {
  for (const JobConfig& original : {JobConfig{}, everything_changed()}) {
    ASSERT_NO_THROW(original.validate());
    const std::string yaml = to_yaml(original);
    JobConfig back;
    ASSERT_NO_THROW(back = parse(yaml)) << yaml;
    EXPECT_EQ(back, original) << yaml;
    EXPECT_EQ(to_yaml(back), yaml);
  }
  const std::string yaml = to_yaml(everything_changed());
  EXPECT_NE(yaml.find("  rope_scaling:\n    type: llama3\n    factor: 8.0\n"), std::string::npos) << yaml;
  EXPECT_NE(yaml.find("  windows: [4096, 8192]\n"), std::string::npos) << yaml;
  EXPECT_NE(to_yaml(JobConfig{}).find("  rope_theta: null\n"), std::string::npos);
  // Every default field is written: no key of a section is left to the reader's defaults.
  EXPECT_NE(to_yaml(JobConfig{}).find("  original_max_position_embeddings: null\n"), std::string::npos);
}

TEST(JobConfig, EqualityIgnoresWhereValuesCameFrom) {
  JobConfig a = parse("optim:\n  lr: 2.0e-5\n");
  EXPECT_EQ(a, JobConfig{});
  a.optim.eps = 1e-7;
  EXPECT_NE(a, JobConfig{});
  JobConfig b;
  b.model.rope_scaling.beta_fast = 32;
  EXPECT_NE(b, JobConfig{});
}

// Two configs that differ in every setting, built member by member rather than through the field
// lists. `base` is valid, and so is `base` with any one value of `other_than_base` (except
// model.dtype, which train.precision must agree with).
JobConfig base_config() {
  JobConfig c;
  c.model.dtype = Dtype::kBFloat16;
  c.model.rope_theta = 500000;
  model::RopeScaling& r = c.model.rope_scaling;
  r.type = model::RopeType::kYarn;
  r.factor = 4;
  r.original_max_position_embeddings = 2048;
  r.beta_fast = 32;
  r.beta_slow = 1;
  r.low_freq_factor = 1;
  r.high_freq_factor = 4;
  c.train.precision = Precision::kBf16Mixed;
  c.eval.windows = {128, 256};
  c.eval.stride = 64;
  return c;
}

JobConfig other_than_base() {
  JobConfig c;
  c.model = {"/models/other", Dtype::kFloat32, true, std::nullopt,
             {.type = model::RopeType::kLlama3, .factor = 8, .original_max_position_embeddings = 4096,
              .attention_factor = 1.5, .beta_fast = 16, .beta_slow = 2, .mscale = 1, .mscale_all_dim = 0.5,
              .truncate = false, .low_freq_factor = 2, .high_freq_factor = 8}};
  c.data = {"/d/train", "/d/val", "/t.model", 512, 18446744073709551615ull};
  c.optim = {3e-5, 0.8, 0.99, 1e-6, 0.1, 0.5, false};
  c.schedule = {5, 0.5, LrDecay::kCosine, 0.1};
  c.train = {.steps = 10, .global_batch = 32, .micro_batch = 2, .precision = Precision::kBf16, .log_every = 2,
             .eval_every = 10, .eval_batches = 4, .seed = 3, .nan_policy = NanPolicy::kSkip,
             .max_skipped_steps = 5, .run_dir = "runs/other", .deterministic = true, .peak_flops = 1e15,
             .cpu_threads = 4, .loss_chunk_tokens = 4096, .ignore_plan = true};
  c.checkpoint = {10, 3, "never", true, false};
  c.parallel = {Sharding::kNoShard, Backend::kGloo, 60, 3, 4, Dtype::kBFloat16};
  c.eval = {EvalProtocol::kPacked, {512}, 32, 0.25, 2, 64, 1000};
  return c;
}

// to_table's lines as (key, value).
std::vector<std::pair<std::string, std::string>> table_rows(const JobConfig& config) {
  std::vector<std::pair<std::string, std::string>> rows;
  std::istringstream in(to_table(config));
  for (std::string line; std::getline(in, line);) {
    const auto gap = line.find("  ");
    rows.emplace_back(line.substr(0, gap), line.substr(line.find_first_not_of(' ', gap)));
  }
  return rows;
}

// Parse, print and compare walk one list: every key printed is one `--set` accepts, and setting it
// changes exactly that key as == and differing_settings see it.
TEST(JobConfig, EveryPrintedKeyIsParsedAndComparedAlone) {
  const JobConfig base = base_config();
  ASSERT_NO_THROW(base.validate());
  const auto rows = table_rows(base);
  const auto other_rows = table_rows(other_than_base());
  const auto changes = differing_settings(base, other_than_base());
  ASSERT_EQ(other_rows.size(), rows.size());
  ASSERT_EQ(changes.size(), rows.size()) << "base_config and other_than_base must differ everywhere";
  const std::string base_yaml = to_yaml(base);
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& [key, value] = other_rows[i];
    SCOPED_TRACE(key);
    ASSERT_EQ(key, rows[i].first);
    EXPECT_EQ(changes[i], key + ": " + rows[i].second + " -> " + value);
    const std::string set = key + "=" + value;
    std::vector<std::string> overrides{set};
    std::vector<std::string> expected{changes[i]};
    if (key == "model.dtype") {
      overrides.push_back("train.precision=fp32");
      expected.push_back("train.precision: bf16_mixed -> fp32");
    }
    JobConfig changed;
    ASSERT_NO_THROW(changed = parse(base_yaml, overrides));
    EXPECT_NE(changed, base);
    EXPECT_EQ(differing_settings(base, changed), expected);
    EXPECT_EQ(changed.origins.at(key), "--set " + set);
  }
}

TEST(DifferingSettings, NamesEachChangedKeyWithBothValues) {
  const JobConfig saved;
  JobConfig current = parse("optim:\n  lr: 2.0e-5\n");
  EXPECT_TRUE(differing_settings(saved, current).empty());
  current.optim.lr = 3e-5;
  current.data.train = "/d/train";
  current.model.rope_scaling.original_max_position_embeddings = 2048;
  current.eval.windows = {128, 256};
  current.checkpoint.export_hf_at_end = true;
  EXPECT_EQ(differing_settings(saved, current),
            (std::vector<std::string>{"model.rope_scaling.original_max_position_embeddings: null -> 2048",
                                      "data.train: \"\" -> /d/train", "optim.lr: 2e-05 -> 3e-05",
                                      "checkpoint.export_hf_at_end: false -> true",
                                      "eval.windows: [] -> [128, 256]"}));
  EXPECT_EQ(differing_settings(current, saved).at(2), "optim.lr: 3e-05 -> 2e-05");
  EXPECT_EQ(differing_settings(everything_changed(), everything_changed()), std::vector<std::string>{});
}

TEST(JobConfig, ToTableAlignsKeysAndValues) {
  const std::string table = to_table(JobConfig{});
  const std::string width(std::string("model.rope_scaling.original_max_position_embeddings").size(), ' ');
  EXPECT_NE(table.find("optim.lr" + width.substr(8) + "  2e-05\n"), std::string::npos) << table;
  EXPECT_NE(table.find("model.source" + width.substr(12) + "  preset:tiny\n"), std::string::npos) << table;
  EXPECT_NE(table.find("data.train" + width.substr(10) + "  \"\"\n"), std::string::npos) << table;
}

TEST(Configs, EveryJobFileLoadsAndValidates) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(LONGTUNE_SOURCE_DIR) / "configs";
  int count = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    JobConfig c;
    ASSERT_NO_THROW(c = load_job_config(entry.path().string()));
    EXPECT_EQ(parse(to_yaml(c)), c);
    ++count;
  }
  EXPECT_GE(count, 11);
}

TEST(Configs, PaperSettings) {
  const auto load = [](const std::string& name) {
    return load_job_config(std::string(LONGTUNE_SOURCE_DIR) + "/configs/" + name + ".yaml");
  };
  const JobConfig tiny = load("tiny_cpu");
  EXPECT_EQ(tiny.model.preset_name(), "tiny");
  EXPECT_EQ(tiny.data.seq_len, 256);
  EXPECT_EQ(tiny.model.rope_scaling.type, model::RopeType::kLinear);
  EXPECT_EQ(tiny.model.rope_scaling.factor, 2.0);
  // The original window is the model's own (preset tiny: 128), not written in the file.
  EXPECT_FALSE(tiny.model.rope_scaling.original_max_position_embeddings.has_value());
  EXPECT_EQ(model::with_rope_scaling(model::model_preset("tiny"), tiny.model.rope_scaling).max_position_embeddings,
            tiny.data.seq_len);
  EXPECT_EQ(tiny.train.steps, 20);

  struct Row { const char* name; int64_t window; double factor; int64_t batch; double lr; };
  // Chen et al. 2023: L = 2048, factor L'/L; batch 64 for 7B/13B/33B at 8192, else 128; lr 2e-5 / 1e-5.
  const Row rows[] = {{"llama7b_pi_8k", 8192, 4, 64, 2e-5},     {"llama7b_pi_16k", 16384, 8, 128, 2e-5},
                      {"llama7b_pi_32k", 32768, 16, 128, 2e-5},  {"llama13b_pi_8k", 8192, 4, 64, 2e-5},
                      {"llama13b_pi_16k", 16384, 8, 128, 2e-5},  {"llama13b_pi_32k", 32768, 16, 128, 2e-5},
                      {"llama33b_pi_8k", 8192, 4, 64, 1e-5},     {"llama33b_pi_16k", 16384, 8, 128, 1e-5},
                      {"llama65b_pi_8k", 8192, 4, 128, 1e-5}};
  for (const Row& row : rows) {
    SCOPED_TRACE(row.name);
    const JobConfig c = load(row.name);
    EXPECT_EQ(c.data.seq_len, row.window);
    EXPECT_EQ(c.model.rope_scaling.type, model::RopeType::kLinear);
    EXPECT_EQ(c.model.rope_scaling.factor, row.factor);
    EXPECT_FALSE(c.model.rope_scaling.original_max_position_embeddings.has_value());
    // On the LLaMA-1 model of the file's size (window 2048) the factor reaches exactly seq_len.
    const std::string size = std::string(row.name).substr(5, std::string(row.name).find('_') - 5);
    EXPECT_EQ(model::with_rope_scaling(model::model_preset("llama-" + size), c.model.rope_scaling)
                  .max_position_embeddings, row.window);
    EXPECT_EQ(c.train.global_batch, row.batch);
    EXPECT_DOUBLE_EQ(c.optim.lr, row.lr);
    EXPECT_EQ(c.train.steps, 1000);
    EXPECT_EQ(c.train.precision, Precision::kBf16Mixed);
    EXPECT_EQ(c.parallel.sharding, Sharding::kFullShard);
    EXPECT_TRUE(c.model.activation_checkpointing);
    EXPECT_EQ(c.schedule.warmup_steps, 20);
    EXPECT_DOUBLE_EQ(c.schedule.warmup_start_factor, 0.1);
    EXPECT_EQ(c.schedule.decay, LrDecay::kConstant);
    EXPECT_EQ(c.optim.weight_decay, 0.0);
    EXPECT_EQ(c.optim.beta2, 0.95);
  }
  const JobConfig ft = load("llama7b_ft_8k");
  EXPECT_EQ(ft.model.rope_scaling.type, model::RopeType::kDefault);
  EXPECT_EQ(ft.train.steps, 10000);
  EXPECT_EQ(ft.data.seq_len, 8192);
}

}  // namespace
}  // namespace longtune::config
