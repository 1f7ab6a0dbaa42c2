// Tests for dist/fsdp (with dist/process_group, and trainer/training_state's sharded checkpoints):
// ranks are threads of this process joined by a real Gloo process group on loopback, each running
// the trainer's own step (trainer/train_step). Sharded gradients and updates equal a single process's (every mode, activation checkpointing, tied embeddings, unit
// sizes that do not divide by the world size); per-rank memory is total / world plus gathered
// units; sharded checkpoint state reloads under another world size and in one process; a stalled
// rank turns into an error within the collective timeout. CPU-only; a few seconds.
#include "dist/fsdp.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>

#include "model/loss.h"
#include "model/seeded_init.h"
#include "tests/dist_support.h"
#include "tests/test_support.h"
#include "trainer/checkpoint.h"
#include "trainer/optimizer.h"
#include "trainer/train_step.h"
#include "trainer/training_state.h"

namespace longtune::dist {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;
using trainer::AdamW;
using trainer::Moment;

const MixedPrecision kFp32{at::kFloat, at::kFloat};

// Odd sizes everywhere, so units split unevenly over 2, 3 and 4 ranks.
model::ModelConfig odd_config(bool tied) {
  model::ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 25;
  c.intermediate_size = 37;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 6;
  c.max_position_embeddings = 32;
  c.tie_word_embeddings = tied;
  return c;
}

model::Llama make_model(const model::ModelConfig& config, bool checkpointing) {
  at::manual_seed(7);
  model::Llama m(config);
  m->set_activation_checkpointing(checkpointing);
  m->train();
  return m;
}

at::Tensor batch_tokens(int64_t rows, int64_t length, int64_t vocab) {
  at::manual_seed(11);
  return at::randint(vocab, {rows, length + 1}, at::kLong);
}

// Calls `fn` with the master gradients, complete and unclipped, inside the trainer's step.
class AfterBackward final : public trainer::StepProbe {
 public:
  explicit AfterBackward(std::function<void(const TrainingParameters&)> fn) : fn_(std::move(fn)) {}
  void after_backward(const TrainingParameters& parameters) override { fn_(parameters); }

 private:
  std::function<void(const TrainingParameters&)> fn_;
};

// One step of the trainer on `rows` (this rank's share of a global batch of `global_tokens` target
// tokens), at lr 1e-2 with clipping at 0.5.
void train_step(model::LlamaImpl& m, TrainingParameters& params, AdamW& optimizer, const at::Tensor& rows,
                double global_tokens, ProcessGroup* group, trainer::StepProbe* probe = nullptr) {
  trainer::StepOptions options;
  options.lr = 1e-2;
  options.grad_clip = 0.5;
  options.global_tokens = global_tokens;
  options.group = group;
  options.probe = probe;
  trainer::train_step(m, params, optimizer, {rows}, options);
}

struct Reference {
  Named grads_after_backward;  // per parameter
  Named weights_after_step;
};

Reference single_process(const model::ModelConfig& config, const at::Tensor& tokens, bool checkpointing) {
  model::Llama m = make_model(config, checkpointing);
  LocalParameters params(*m, kFp32);
  AdamW optimizer(params.master(), config::OptimSection{});
  Reference ref;
  AfterBackward capture([&](const TrainingParameters& p) {
    for (const auto& [name, t] : p.master()) ref.grads_after_backward.emplace_back(name, t.grad().clone());
  });
  const int64_t t = tokens.size(1) - 1;
  train_step(*m, params, optimizer, tokens, double(tokens.size(0) * t), nullptr, &capture);
  for (const auto& [name, p] : params.master()) ref.weights_after_step.emplace_back(name, p.detach().clone());
  return ref;
}

double max_difference(const Named& a, const Named& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    worst = std::max(worst, (a[i].second - b[i].second).abs().max().item<double>());
  }
  return worst;
}

// The whole gradient, put together from every rank's shard (a collective).
Named whole_gradients(const ShardedParameters& params, ProcessGroup& group, ShardingStrategy mode) {
  Named grads;
  for (size_t u = 0; u < params.layout().size(); ++u) {
    const FlatUnit& unit = params.layout()[u];
    at::Tensor shard = params.master()[u].second.grad();
    at::Tensor flat = shard.clone();  // clipping scales the live gradient in place later
    if (mode != ShardingStrategy::kNoShard) {
      flat = at::empty({shard.numel() * group.world_size()}, shard.options());
      group.all_gather(flat, shard).wait();
    }
    for (const FlatParam& p : unit.params) grads.emplace_back(p.name, flat.narrow(0, p.offset, p.numel).view(p.shape));
  }
  return grads;
}

// The job-file spelling, for readable test names.
std::string strategy_name(ShardingStrategy mode) {
  switch (mode) {
    case ShardingStrategy::kFullShard: return "full_shard";
    case ShardingStrategy::kShardGradOp: return "shard_grad_op";
    case ShardingStrategy::kNoShard: return "no_shard";
  }
  return "unknown";
}

struct Case {
  int world;
  ShardingStrategy mode;
  bool checkpointing;
  bool tied;
  int prefetch_depth;
  size_t reductions_in_flight = 2;
};

class ShardedMatchesSingleProcess : public ::testing::TestWithParam<Case> {};

TEST_P(ShardedMatchesSingleProcess, GradientsAndUpdate) {
  const Case c = GetParam();
  const model::ModelConfig config = odd_config(c.tied);
  const int64_t rows = 12, length = 9;
  const at::Tensor tokens = batch_tokens(rows, length, config.vocab_size);
  const Reference ref = single_process(config, tokens, c.checkpointing);
  std::vector<model::Llama> models;
  for (int r = 0; r < c.world; ++r) models.push_back(make_model(config, c.checkpointing));
  bool uneven = false;
  for (const FlatUnit& unit : flat_units(*models[0])) uneven |= unit.numel % c.world != 0;
  if (c.world > 1 && c.mode != ShardingStrategy::kNoShard) {
    EXPECT_TRUE(uneven) << "the test wants a unit that does not divide by the world size";
  }
  std::mutex mutex;
  run_ranks(c.world, [&](int rank, ProcessGroup& group) {
    model::LlamaImpl& m = *models[rank];
    const model::ModuleWeights initial(m);  // before sharding takes the parameters over
    ShardedParameters params(m, kFp32, c.mode, group, c10::Device(c10::kCPU),
                             ShardingOptions{c.prefetch_depth, c.reductions_in_flight});
    load_weights(params, initial);
    config::OptimSection options;
    trainer::AdamW optimizer(params.master(), options);
    const int64_t per_rank = rows / c.world;
    const at::Tensor mine = tokens.narrow(0, rank * per_rank, per_rank);
    Named grads;
    AfterBackward gather_grads([&](const TrainingParameters&) { grads = whole_gradients(params, group, c.mode); });
    train_step(m, params, optimizer, mine, double(rows * length), &group, &gather_grads);
    const Named weights = params.full_state();  // collective
    std::lock_guard<std::mutex> lock(mutex);
    // Gradients: equal up to the reordered sums over ranks, relative to the largest gradient.
    double largest = 0;
    for (const auto& [name, g] : ref.grads_after_backward) largest = std::max(largest, g.abs().max().item<double>());
    EXPECT_LT(max_difference(grads, ref.grads_after_backward), 1e-6 * largest) << "rank " << rank;
    // Summing over ranks reorders the gradient sums (~1e-9 here); AdamW's first step is about
    // lr * g / |g| per element, so elements with tiny gradients turn that into up to ~1e-5.
    const double error = max_difference(weights, ref.weights_after_step);
    EXPECT_LT(error, 1e-4) << "rank " << rank;
  });
}

INSTANTIATE_TEST_SUITE_P(Modes, ShardedMatchesSingleProcess,
                         ::testing::Values(Case{1, ShardingStrategy::kFullShard, false, false, 0},
                                           Case{2, ShardingStrategy::kFullShard, false, false, 1},
                                           Case{3, ShardingStrategy::kFullShard, false, false, 0},
                                           Case{3, ShardingStrategy::kFullShard, true, false, 1},
                                           Case{3, ShardingStrategy::kFullShard, false, true, 1},
                                           Case{2, ShardingStrategy::kFullShard, true, true, 3, 1},
                                           Case{4, ShardingStrategy::kShardGradOp, false, false, 0},
                                           Case{3, ShardingStrategy::kNoShard, false, false, 0},
                                           Case{2, ShardingStrategy::kNoShard, true, true, 1}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           const Case& c = info.param;
                           return "world" + std::to_string(c.world) + "_" + strategy_name(c.mode) +
                                  (c.checkpointing ? "_checkpointing" : "") + (c.tied ? "_tied" : "") +
                                  (c.prefetch_depth ? "_prefetch" + std::to_string(c.prefetch_depth) : "") +
                                  (c.reductions_in_flight != 2 ? "_reductions" + std::to_string(c.reductions_in_flight) : "");
                         });

// The NCCL path on one GPU (world size 1, as a one-GPU launch runs it): same gradients as the
// unsharded model on that GPU.
TEST(ShardedParameters, NcclOnOneGpuMatchesUnsharded) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const c10::Device cuda(c10::kCUDA, 0);
  const model::ModelConfig config = odd_config(false);
  const at::Tensor tokens = batch_tokens(4, 9, config.vocab_size).to(cuda);
  model::Llama reference = make_model(config, false);
  reference->to(cuda);
  LocalParameters local(*reference, kFp32);
  AdamW local_optimizer(local.master(), config::OptimSection{});
  std::map<std::string, at::Tensor> reference_grads;
  AfterBackward capture_reference([&](const TrainingParameters& p) {
    for (const auto& [name, t] : p.master()) reference_grads[name] = t.grad().clone();
  });
  train_step(*reference, local, local_optimizer, tokens, 36.0, nullptr, &capture_reference);
  model::Llama sharded_model = make_model(config, false);  // stays on the host: sharding moves it
  run_ranks(1, [&](int, ProcessGroup& group) {
    EXPECT_EQ(group.backend_name(), "nccl");
    const model::ModuleWeights initial(*sharded_model);  // before sharding takes the parameters over
    ShardedParameters params(*sharded_model, kFp32, ShardingStrategy::kFullShard, group, cuda, ShardingOptions{1});
    load_weights(params, initial);
    AdamW optimizer(params.master(), config::OptimSection{});
    AfterBackward compare([&](const TrainingParameters&) {
      for (size_t u = 0; u < params.layout().size(); ++u)
        for (const FlatParam& p : params.layout()[u].params)
          EXPECT_LT((params.master()[u].second.grad().narrow(0, p.offset, p.numel).view(p.shape) -
                     reference_grads.at(p.name)).abs().max().item<double>(), 1e-6) << p.name;
    });
    train_step(*sharded_model, params, optimizer, tokens, 36.0, &group, &compare);
  }, std::chrono::seconds(60), cuda, Backend::kNccl);
}

TEST(ShardedParameters, MemoryPerRankIsTotalOverWorldPlusGatheredUnits) {
  model::ModelConfig config = odd_config(false);
  config.hidden_size = 64;
  config.head_dim = 16;
  config.intermediate_size = 160;
  config.num_hidden_layers = 6;
  config.vocab_size = 300;
  const int world = 4;
  std::vector<model::Llama> models;
  for (int r = 0; r < world; ++r) models.push_back(make_model(config, false));
  const int64_t total = config.num_parameters();
  const at::Tensor tokens = batch_tokens(world, 16, config.vocab_size);
  std::mutex mutex;
  run_ranks(world, [&](int rank, ProcessGroup& group) {
    model::LlamaImpl& m = *models[rank];
    const model::ModuleWeights initial(m);  // before sharding takes the parameters over
    ShardedParameters params(m, kFp32, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU));
    load_weights(params, initial);
    trainer::AdamW optimizer(params.master(), config::OptimSection{});
    params.reset_peak();
    train_step(m, params, optimizer, tokens.narrow(0, rank, 1), 16.0 * world, &group);
    const ShardedMemory memory = params.memory();
    int64_t optimizer_bytes = 0;
    for (size_t u = 0; u < params.master().size(); ++u)
      for (const Moment moment : trainer::kMoments)
        optimizer_bytes += optimizer.moment(moment, u).numel() * optimizer.moment(moment, u).element_size();
    const int64_t state = memory.master_bytes + memory.grad_bytes + optimizer_bytes;
    const int64_t whole = total * 4 * 4;  // fp32 master + grad + two moments
    const int64_t padding = m.num_units() * world * 4 * 4;
    std::lock_guard<std::mutex> lock(mutex);
    std::printf("rank %d: state %lld B of %lld B total (1/%d = %lld B); peak gathered %lld B, largest unit %lld B\n",
                rank, static_cast<long long>(state), static_cast<long long>(whole), world,
                static_cast<long long>(whole / world), static_cast<long long>(memory.peak_gathered_bytes),
                static_cast<long long>(memory.largest_unit_bytes));
    EXPECT_LE(state, whole / world + padding);
    EXPECT_GE(state, whole / world - padding);
    EXPECT_EQ(memory.gathered_bytes, 0) << "every unit is freed after the step";
    // Forward holds one unit at a time; the head stays gathered into backward, where one more
    // unit is gathered beside it.
    EXPECT_LE(memory.peak_gathered_bytes, 2 * memory.largest_unit_bytes);
    EXPECT_GT(memory.peak_gathered_bytes, 0);
  });
}

// parallel.reduce_dtype bfloat16: gradients summed over ranks in bf16, then accumulated over
// micro-batches in the fp32 master gradient. The error against an fp32 reduction of the same
// bf16 gradients is measured: bf16 keeps 8 significant bits, so each partial sum is off by up to
// 2^-9 relative, a few of them per element over 4 ranks.
TEST(ShardedParameters, Bf16ReductionStaysWithinBf16RoundingOfTheFp32One) {
  const model::ModelConfig config = odd_config(false);
  const int world = 4, micro_batches = 2;
  const at::Tensor tokens = batch_tokens(world * micro_batches * 2, 9, config.vocab_size);
  const MixedPrecision bf16_mixed{at::kBFloat16, at::kFloat};
  std::map<std::string, Named> grads;  // by reduce dtype
  std::mutex mutex;
  for (const at::ScalarType reduce : {at::kFloat, at::kBFloat16}) {
    std::vector<model::Llama> models;
    for (int r = 0; r < world; ++r) {
      models.push_back(make_model(config, false));
      models.back()->to(at::kBFloat16);
    }
    run_ranks(world, [&](int rank, ProcessGroup& group) {
      model::LlamaImpl& m = *models[rank];
      const model::ModuleWeights initial(m);
      ShardedParameters params(m, bf16_mixed, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU),
                               ShardingOptions{0, 2, reduce});
      load_weights(params, initial);
      AdamW optimizer(params.master(), config::OptimSection{});
      Named mine;
      AfterBackward capture([&](const TrainingParameters&) {
        for (const auto& [name, master] : params.master()) EXPECT_EQ(master.grad().scalar_type(), at::kFloat) << name;
        mine = whole_gradients(params, group, ShardingStrategy::kFullShard);
      });
      std::vector<at::Tensor> batches;
      for (int k = 0; k < micro_batches; ++k) batches.push_back(tokens.narrow(0, (rank * micro_batches + k) * 2, 2));
      trainer::StepOptions options;
      options.lr = 1e-2;
      options.global_tokens = double(tokens.size(0) * 9);
      options.group = &group;
      options.probe = &capture;
      trainer::train_step(m, params, optimizer, batches, options);
      std::lock_guard<std::mutex> lock(mutex);
      if (rank == 0) grads[c10::toString(reduce)] = mine;
    });
  }
  const Named& fp32 = grads.at("Float");
  const Named& bf16 = grads.at("BFloat16");
  ASSERT_EQ(fp32.size(), bf16.size());
  double diff_squared = 0, norm_squared = 0, worst_relative_to_largest = 0;
  for (size_t i = 0; i < fp32.size(); ++i) {
    const at::Tensor a = fp32[i].second.to(at::kDouble), b = bf16[i].second.to(at::kDouble);
    diff_squared += (a - b).pow(2).sum().item<double>();
    norm_squared += a.pow(2).sum().item<double>();
    worst_relative_to_largest = std::max(worst_relative_to_largest,
                                         (a - b).abs().max().item<double>() / a.abs().max().item<double>());
  }
  const double relative = std::sqrt(diff_squared / norm_squared);
  std::printf("bf16 vs fp32 gradient reduction over %d ranks, %d micro-batches: |g_bf16 - g_fp32| / |g_fp32| = "
              "%.3g; worst element relative to its tensor's largest: %.3g\n", world, micro_batches, relative,
              worst_relative_to_largest);
  EXPECT_GT(relative, 0) << "the bf16 reduction must actually round";
  EXPECT_LT(relative, 4 * std::ldexp(1.0, -9));
  EXPECT_LT(worst_relative_to_largest, 4 * std::ldexp(1.0, -8));
}

// A deeper prefetch holds more units at once, and only the units it was asked for.
TEST(ShardedParameters, PrefetchDepthBoundsTheGatheredUnits) {
  model::ModelConfig config = odd_config(false);
  config.num_hidden_layers = 6;
  const int world = 2;
  std::map<int, int64_t> peak;  // by depth
  int64_t largest = 0;
  std::mutex mutex;
  for (const int depth : {0, 1, 3}) {
    std::vector<model::Llama> models;
    for (int r = 0; r < world; ++r) models.push_back(make_model(config, false));
    run_ranks(world, [&](int rank, ProcessGroup& group) {
      model::LlamaImpl& m = *models[rank];
      const model::ModuleWeights initial(m);
      ShardedParameters params(m, kFp32, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU),
                               ShardingOptions{depth});
      load_weights(params, initial);
      AdamW optimizer(params.master(), config::OptimSection{});
      params.reset_peak();
      train_step(m, params, optimizer, batch_tokens(world, 9, config.vocab_size).narrow(0, rank, 1), 18.0, &group);
      std::lock_guard<std::mutex> lock(mutex);
      EXPECT_EQ(params.memory().gathered_bytes, 0);
      peak[depth] = params.memory().peak_gathered_bytes;
      largest = params.memory().largest_unit_bytes;
    });
  }
  EXPECT_LT(peak[0], peak[1]);
  EXPECT_LT(peak[1], peak[3]);
  // The head held into backward, the computing unit and `depth` more.
  EXPECT_LE(peak[3], (2 + 3) * largest);
}

// A preset's random init, sharded: each rank computes only its shards of a hollow model, and the
// whole equals the single process's init bitwise under any world size; so does training from it.
TEST(ShardedParameters, PresetInitFromAHollowModelIsTheSameUnderAnyWorldSize) {
  const model::ModelConfig config = odd_config(false);
  const model::SeededInit init(1234);
  model::Llama single(config, model::ParameterOptions{model::ParameterInit::kEmpty});
  LocalParameters local(*single, kFp32);
  load_weights(local, init);
  const Named expected = local.full_state();
  for (const int world : {1, 2, 3, 8}) {
    std::vector<model::Llama> models;
    for (int r = 0; r < world; ++r)
      models.emplace_back(config, model::ParameterOptions{model::ParameterInit::kHollow});
    std::mutex mutex;
    run_ranks(world, [&](int rank, ProcessGroup& group) {
      ShardedParameters params(*models[rank], kFp32, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU));
      load_weights(params, init);
      const Named weights = params.full_state();
      std::lock_guard<std::mutex> lock(mutex);
      EXPECT_EQ(max_difference(weights, expected), 0.0) << "world " << world << " rank " << rank;
    });
  }
}

// Saves a world-4 sharded state, then loads it at world 3 and in one process: same weights and
// moments.
TEST(ShardedCheckpoint, ReshardsToAnyWorldSizeAndToOneProcess) {
  const model::ModelConfig config = odd_config(false);
  const at::Tensor tokens = batch_tokens(4, 8, config.vocab_size);
  longtune::testing::TempDir dir;
  class Part final : public trainer::Stateful {
   public:
    Part(TrainingParameters& p, trainer::AdamW& o, int r) : params(p), optimizer(o), rank(r) {}
    void save(trainer::CheckpointWriter& w) const override { trainer::save_parameters(w, params, optimizer, rank); }
    void load(const trainer::CheckpointReader& r) override { trainer::load_parameters(r, params, optimizer); }
    TrainingParameters& params;
    trainer::AdamW& optimizer;
    int rank;
  };
  Named saved_weights, saved_moments;
  std::vector<model::Llama> models;
  for (int r = 0; r < 4; ++r) models.push_back(make_model(config, false));
  std::mutex mutex;
  run_ranks(4, [&](int rank, ProcessGroup& group) {
    const model::ModuleWeights initial(*models[rank]);  // before sharding takes the parameters over
    ShardedParameters params(*models[rank], kFp32, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU));
    load_weights(params, initial);
    trainer::AdamW optimizer(params.master(), config::OptimSection{});
    train_step(*models[rank], params, optimizer, tokens.narrow(0, rank, 1), 32.0, &group);
    trainer::CheckpointManager manager(dir.path(), 1);
    Part part(params, optimizer, rank);
    manager.save(1, {{"parameters", &part}}, &group);
    const Named weights = params.full_state();
    std::lock_guard<std::mutex> lock(mutex);
    if (rank == 0) saved_weights = weights;
  });
  const auto step_dir = trainer::CheckpointManager(dir.path(), 1).find_resume("auto");
  ASSERT_TRUE(step_dir.has_value());
  EXPECT_TRUE(std::filesystem::exists(*step_dir / "model.rank00003.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(*step_dir / "sharding.json"));
  // One process.
  model::Llama single = make_model(config, false);
  LocalParameters local(*single, kFp32);
  trainer::AdamW local_optimizer(local.master(), config::OptimSection{});
  Part local_part(local, local_optimizer, 0);
  trainer::CheckpointManager::load(*step_dir, {{"parameters", &local_part}});
  EXPECT_EQ(max_difference(local.full_state(), saved_weights), 0.0);
  EXPECT_EQ(local_optimizer.steps_taken(), 1);
  // Three ranks: their consolidated moments equal the single process's.
  Named local_exp_avg;  // by parameter
  for (size_t i = 0; i < local.master().size(); ++i)
    local_exp_avg.emplace_back(local.master()[i].first, local_optimizer.moment(Moment::kExpAvg, i).clone());
  models.clear();
  for (int r = 0; r < 3; ++r) models.push_back(make_model(config, false));
  run_ranks(3, [&](int rank, ProcessGroup& group) {
    ShardedParameters params(*models[rank], kFp32, ShardingStrategy::kFullShard, group, c10::Device(c10::kCPU));
    trainer::AdamW optimizer(params.master(), config::OptimSection{});
    Part part(params, optimizer, rank);
    trainer::CheckpointManager::load(*step_dir, {{"parameters", &part}});
    const Named weights = params.full_state();
    std::lock_guard<std::mutex> lock(mutex);
    EXPECT_EQ(max_difference(weights, saved_weights), 0.0) << "rank " << rank;
    // The rank's moment shard equals the matching range of the single process's moments.
    const FlatUnit& unit = params.layout()[1];
    const int64_t begin = unit.shard_begin(rank, 3), end = unit.shard_end(rank, 3);
    at::Tensor expected = at::cat([&] {
      std::vector<at::Tensor> flat;
      for (const FlatParam& p : unit.params)
        for (const auto& [name, t] : local_exp_avg)
          if (name == p.name) flat.push_back(t.reshape({-1}));
      return flat;
    }());
    const at::Tensor& shard = optimizer.moment(Moment::kExpAvg, 1);
    EXPECT_TRUE(at::equal(shard.narrow(0, 0, end - begin), expected.narrow(0, begin, end - begin)));
  });
}

TEST(ProcessGroup, StalledRankBecomesAnErrorWithinTheTimeout) {
  const auto timeout = std::chrono::milliseconds(1500);
  std::string error;
  double waited = 0;
  const int port = free_port();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank)
    threads.emplace_back([&, rank] {
      DistEnv env;
      env.rank = env.local_rank = rank;
      env.world_size = env.local_world_size = 2;
      env.master_port = port;
      env.gloo_interface = "lo";
      auto group = ProcessGroup::create(env, c10::Device(c10::kCPU), Backend::kGloo, timeout);
      if (rank == 1) {
        std::this_thread::sleep_for(timeout * 3);  // stalls: never joins the collective
        return;
      }
      const auto start = std::chrono::steady_clock::now();
      try {
        at::Tensor t = at::ones({4});
        group->all_reduce_sum(t).wait();
      } catch (const Error& e) {
        error = e.what();
      }
      waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    });
  for (auto& t : threads) t.join();
  EXPECT_NE(error.find("rank 0: all_reduce failed"), std::string::npos) << error;
  EXPECT_NE(error.find("collective timeout of 1 s"), std::string::npos) << error;
  EXPECT_LT(waited, 3 * 1.5);
}

}  // namespace
}  // namespace longtune::dist
