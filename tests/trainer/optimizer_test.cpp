// AdamW (fused and per-tensor) against LibTorch's torch::optim::AdamW, state round trips, the
// learning-rate schedule by hand, and clip_grad_norm against torch::nn::utils::clip_grad_norm_.
#include "trainer/optimizer.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <iostream>
#include <map>
#include <numbers>

#include "tests/test_support.h"

namespace longtune::trainer {
namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

const std::vector<std::vector<int64_t>> kShapes = {{64, 48}, {48}, {3, 5, 7}, {1}};

NamedTensors make_params(uint64_t seed) {
  at::manual_seed(seed);
  NamedTensors params;
  for (size_t i = 0; i < kShapes.size(); ++i)
    params.emplace_back("layer" + std::to_string(i) + ".weight", at::randn(kShapes[i]).requires_grad_(true));
  return params;
}

NamedTensors copy_of(const NamedTensors& params) {
  NamedTensors out;
  for (const auto& [name, p] : params) out.emplace_back(name, p.detach().clone().requires_grad_(true));
  return out;
}

// Deterministic gradients for step `step`, the same for every optimizer under comparison.
std::vector<at::Tensor> grads_for(int64_t step) {
  at::manual_seed(1000 + step);
  std::vector<at::Tensor> grads;
  for (const auto& shape : kShapes) grads.push_back(at::randn(shape) * 0.1);
  return grads;
}

void set_grads(const NamedTensors& params, const std::vector<at::Tensor>& grads) {
  for (size_t i = 0; i < params.size(); ++i) params[i].second.mutable_grad() = grads[i].clone();
}

bool bitwise_equal(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() &&
         at::equal(a.reshape(-1).view(at::kByte), b.reshape(-1).view(at::kByte));
}

// max |a - b| / max |b|: the error relative to the tensor's scale.
double max_relative_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// max over elements of |a - b| / |b| (|b| floored at 1e-30): harsh on elements near zero.
double max_elementwise_relative_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs() / b.abs().clamp_min(1e-30)).max().item<double>();
}

config::OptimSection optim_options(bool fused, double weight_decay) {
  config::OptimSection o;
  o.lr = 1e-3;
  o.beta1 = 0.9;
  o.beta2 = 0.95;
  o.eps = 1e-8;
  o.weight_decay = weight_decay;
  o.fused = fused;
  return o;
}

struct Comparison {
  bool bitwise = true;
  double max_rel = 0;              // max_relative_diff over the tensors
  double max_elementwise_rel = 0;  // max_elementwise_relative_diff over the tensors
};

// Runs ours and torch::optim::AdamW side by side for `steps` steps at lr(step).
Comparison compare_with_reference(bool fused, double weight_decay, int64_t steps,
                                  const std::function<double(int64_t)>& lr_at) {
  const config::OptimSection options = optim_options(fused, weight_decay);
  NamedTensors ours = make_params(7);
  NamedTensors theirs = copy_of(ours);
  AdamW optimizer(ours, options);
  std::vector<at::Tensor> reference_params;
  for (const auto& [name, p] : theirs) reference_params.push_back(p);
  torch::optim::AdamW reference(reference_params, torch::optim::AdamWOptions(options.lr)
                                                      .betas({options.beta1, options.beta2})
                                                      .eps(options.eps)
                                                      .weight_decay(options.weight_decay)
                                                      .amsgrad(false));
  for (int64_t step = 0; step < steps; ++step) {
    const auto grads = grads_for(step);
    set_grads(ours, grads);
    set_grads(theirs, grads);
    const double lr = lr_at(step);
    optimizer.step(lr);
    static_cast<torch::optim::AdamWOptions&>(reference.param_groups()[0].options()).lr(lr);
    reference.step();
  }
  EXPECT_EQ(optimizer.steps_taken(), steps);
  Comparison result;
  for (size_t i = 0; i < ours.size(); ++i) {
    result.bitwise = result.bitwise && bitwise_equal(ours[i].second, theirs[i].second);
    result.max_rel = std::max(result.max_rel, max_relative_diff(ours[i].second, theirs[i].second));
    result.max_elementwise_rel = std::max(result.max_elementwise_rel,
                                          max_elementwise_relative_diff(ours[i].second, theirs[i].second));
    // The parameters did move (the comparison is not vacuous).
    EXPECT_FALSE(at::equal(ours[i].second, make_params(7)[i].second)) << ours[i].first;
  }
  return result;
}

void expect_matches_reference(bool fused, double weight_decay, const std::function<double(int64_t)>& lr_at) {
  const Comparison c = compare_with_reference(fused, weight_decay, 20, lr_at);
  std::cout << "[ info     ] " << (fused ? "fused" : "unfused") << " AdamW, weight_decay " << weight_decay
            << " vs torch::optim::AdamW after 20 steps: "
            << (c.bitwise ? std::string("bitwise equal")
                          : fmt::format("max relative diff {:.3g} (elementwise {:.3g})", c.max_rel,
                                        c.max_elementwise_rel))
            << "\n";
  EXPECT_LE(c.max_rel, 1e-6);
}

TEST(AdamW, FusedMatchesTorchAdamW) {
  expect_matches_reference(true, 0.0, [](int64_t) { return 1e-3; });
  expect_matches_reference(true, 0.1, [](int64_t) { return 1e-3; });
}

TEST(AdamW, UnfusedMatchesTorchAdamW) {
  expect_matches_reference(false, 0.0, [](int64_t) { return 1e-3; });
  expect_matches_reference(false, 0.1, [](int64_t) { return 1e-3; });
}

TEST(AdamW, ScheduledLearningRateMatchesTorchAdamW) {
  config::ScheduleSection schedule;
  schedule.warmup_steps = 5;
  schedule.decay = config::LrDecay::kCosine;
  schedule.min_lr_factor = 0.1;
  const auto lr_at = [&](int64_t step) { return learning_rate(schedule, 1e-3, step, 20); };
  expect_matches_reference(true, 0.1, lr_at);
  expect_matches_reference(false, 0.1, lr_at);
}

TEST(AdamW, FusedAndUnfusedAgree) {
  NamedTensors a = make_params(3), b = copy_of(a);
  AdamW fused(a, optim_options(true, 0.1)), unfused(b, optim_options(false, 0.1));
  for (int64_t step = 0; step < 10; ++step) {
    const auto grads = grads_for(step);
    set_grads(a, grads);
    set_grads(b, grads);
    fused.step(1e-3);
    unfused.step(1e-3);
  }
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(max_relative_diff(a[i].second, b[i].second), 1e-6) << a[i].first;
}

TEST(AdamW, SkipsParametersWithoutGradient) {
  NamedTensors params = make_params(4);
  const at::Tensor before = params[1].second.detach().clone();
  AdamW optimizer(params, optim_options(true, 0.1));
  auto grads = grads_for(0);
  set_grads(params, grads);
  params[1].second.mutable_grad() = at::Tensor();
  optimizer.step(1e-3);
  EXPECT_TRUE(bitwise_equal(params[1].second.detach(), before));
  EXPECT_FALSE(at::equal(params[0].second, make_params(4)[0].second));
}

TEST(AdamW, BFloat16ParametersStep) {
  for (bool fused : {true, false}) {
    NamedTensors params;
    params.emplace_back("w", at::randn({8, 8}).to(at::kBFloat16).requires_grad_(true));
    const at::Tensor before = params[0].second.detach().clone();
    AdamW optimizer(params, optim_options(fused, 0.0));
    params[0].second.mutable_grad() = at::ones({8, 8}, at::kBFloat16);
    optimizer.step(0.5);
    // First Adam step moves every weight by about lr against the gradient's sign.
    EXPECT_TRUE(at::allclose((before - params[0].second.detach()).to(at::kFloat), at::full({8, 8}, 0.5f), 0.02, 0.02))
        << (fused ? "fused" : "unfused");
    EXPECT_EQ(optimizer.moment(Moment::kExpAvg, 0).scalar_type(), at::kBFloat16);
  }
}

// The optimizer's state by "<moment>/<parameter>" and "step" (this test's own keys).
std::map<std::string, at::Tensor> state_of(const AdamW& optimizer) {
  std::map<std::string, at::Tensor> state;
  for (size_t i = 0; i < optimizer.params().size(); ++i)
    for (const Moment m : kMoments) state[to_string(m) + "/" + optimizer.params()[i].first] = optimizer.moment(m, i);
  state["step"] = optimizer.step_count();
  return state;
}

std::map<std::string, at::Tensor> saved_copy(const AdamW& optimizer) {
  std::map<std::string, at::Tensor> saved;
  for (const auto& [name, t] : state_of(optimizer)) saved[name] = t.detach().clone();
  return saved;
}

// Loads `saved` (keyed as state_of keys it; a missing key loads an undefined tensor).
void load_saved(AdamW& optimizer, const std::map<std::string, at::Tensor>& saved) {
  const auto find = [&](const std::string& key) {
    const auto it = saved.find(key);
    return it == saved.end() ? at::Tensor() : it->second;
  };
  optimizer.load_state(find("step"), [&](Moment m, size_t i) {
    return find(to_string(m) + "/" + optimizer.params()[i].first);
  });
}

void expect_state_round_trip(bool fused) {
  const config::OptimSection options = optim_options(fused, 0.1);
  NamedTensors uninterrupted = make_params(11);
  AdamW first(uninterrupted, options);
  const int64_t k = 6, total = 14;
  std::map<std::string, at::Tensor> saved;
  NamedTensors resumed_params;
  for (int64_t step = 0; step < k; ++step) {
    set_grads(uninterrupted, grads_for(step));
    first.step(1e-3);
  }
  saved = saved_copy(first);
  resumed_params = copy_of(uninterrupted);
  EXPECT_EQ(saved.size(), 2 * uninterrupted.size() + 1);
  EXPECT_EQ(saved.at("step").item<float>(), static_cast<float>(k));
  EXPECT_TRUE(saved.count("exp_avg/layer0.weight") && saved.count("exp_avg_sq/layer2.weight"));

  AdamW resumed(resumed_params, options);
  load_saved(resumed, saved);
  EXPECT_EQ(resumed.steps_taken(), k);
  // The loaded state equals the saved one bit for bit.
  for (const auto& [name, t] : state_of(resumed)) EXPECT_TRUE(bitwise_equal(t, saved.at(name))) << name;
  for (int64_t step = k; step < total; ++step) {
    set_grads(uninterrupted, grads_for(step));
    set_grads(resumed_params, grads_for(step));
    first.step(1e-3);
    resumed.step(1e-3);
  }
  for (size_t i = 0; i < uninterrupted.size(); ++i) {
    EXPECT_TRUE(bitwise_equal(uninterrupted[i].second.detach(), resumed_params[i].second.detach()))
        << uninterrupted[i].first << (fused ? " fused" : " unfused");
  }
}

TEST(AdamW, StateRoundTripIsBitwise) {
  expect_state_round_trip(true);
  expect_state_round_trip(false);
}

TEST(AdamW, LoadStateNamesMissingOrMismatchedTensor) {
  NamedTensors params = make_params(5);
  AdamW optimizer(params, optim_options(true, 0.0));
  std::map<std::string, at::Tensor> saved = saved_copy(optimizer);
  saved.erase("exp_avg_sq/layer2.weight");
  testing::expect_error([&] { load_saved(optimizer, saved); }, {"exp_avg_sq of 'layer2.weight'", "missing"});

  saved = saved_copy(optimizer);
  saved["exp_avg/layer0.weight"] = at::zeros({48, 64});
  testing::expect_error([&] { load_saved(optimizer, saved); }, {"exp_avg of 'layer0.weight'", "[48, 64]", "[64, 48]"});

  saved = saved_copy(optimizer);
  saved["exp_avg/layer1.weight"] = at::zeros({48}, at::kDouble);
  testing::expect_error([&] { load_saved(optimizer, saved); }, {"exp_avg of 'layer1.weight'", "Double", "Float"});

  saved = saved_copy(optimizer);
  saved.erase("step");
  testing::expect_error([&] { load_saved(optimizer, saved); }, {"'step'", "missing"});
}

// The fused CUDA kernel against the CPU one, and a CUDA state round trip through CPU copies (what
// a checkpoint hands back). Skipped without a GPU.
TEST(AdamW, CudaFusedMatchesCpuAndRoundTrips) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const double weight_decay : {0.0, 0.1}) {
    for (const bool fused : {true, false}) {
      NamedTensors cpu = make_params(7);
      NamedTensors gpu;
      for (const auto& [name, p] : cpu) gpu.emplace_back(name, p.detach().to(at::kCUDA).requires_grad_(true));
      AdamW cpu_optimizer(cpu, optim_options(true, weight_decay));
      AdamW gpu_optimizer(gpu, optim_options(fused, weight_decay));
      std::map<std::string, at::Tensor> saved;
      NamedTensors resumed_params;
      for (int64_t step = 0; step < 20; ++step) {
        const auto grads = grads_for(step);
        set_grads(cpu, grads);
        for (size_t i = 0; i < gpu.size(); ++i) gpu[i].second.mutable_grad() = grads[i].to(at::kCUDA);
        cpu_optimizer.step(1e-3);
        gpu_optimizer.step(1e-3);
        if (step == 9) {
          for (const auto& [name, t] : state_of(gpu_optimizer)) saved[name] = t.to(at::kCPU);
          for (const auto& [name, p] : gpu) resumed_params.emplace_back(name, p.detach().clone().requires_grad_(true));
        }
      }
      AdamW resumed(resumed_params, optim_options(fused, weight_decay));
      load_saved(resumed, saved);
      for (int64_t step = 10; step < 20; ++step) {
        const auto grads = grads_for(step);
        for (size_t i = 0; i < resumed_params.size(); ++i)
          resumed_params[i].second.mutable_grad() = grads[i].to(at::kCUDA);
        resumed.step(1e-3);
      }
      double max_rel = 0;
      bool bitwise = true;
      for (size_t i = 0; i < cpu.size(); ++i) {
        const at::Tensor on_gpu = gpu[i].second.detach().cpu();
        bitwise = bitwise && bitwise_equal(on_gpu, cpu[i].second.detach());
        max_rel = std::max(max_rel, max_relative_diff(on_gpu, cpu[i].second.detach()));
        EXPECT_TRUE(bitwise_equal(resumed_params[i].second.detach().cpu(), on_gpu)) << gpu[i].first;
        EXPECT_TRUE(resumed.moment(Moment::kExpAvg, i).is_cuda());
      }
      std::cout << "[ info     ] CUDA " << (fused ? "fused" : "unfused") << " AdamW, weight_decay " << weight_decay
                << " vs CPU fused after 20 steps: "
                << (bitwise ? std::string("bitwise equal") : fmt::format("max relative diff {:.3g}", max_rel)) << "\n";
      // Different kernels with their own op order: ulp-level differences that add up over the steps
      // (7.4e-7 seen on an H200 with weight decay).
      EXPECT_LE(max_rel, 4e-6);
    }
  }
}

// ---- learning_rate ----

config::ScheduleSection schedule_of(int64_t warmup, config::LrDecay decay, double min_factor) {
  config::ScheduleSection s;
  s.warmup_steps = warmup;
  s.warmup_start_factor = 0.1;
  s.decay = decay;
  s.min_lr_factor = min_factor;
  return s;
}

TEST(LearningRate, LinearWarmupLikeTorchLinearLR) {
  const double peak = 2e-4;
  const config::ScheduleSection s = schedule_of(10, config::LrDecay::kConstant, 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 0, 100), 0.1 * peak);
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 1, 100), (0.1 + 0.9 * 0.1) * peak);
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 5, 100), 0.55 * peak);
  EXPECT_DOUBLE_EQ(learning_rate(s, peak, 10, 100), peak);
}

TEST(LearningRate, ConstantAfterWarmup) {
  const config::ScheduleSection s = schedule_of(10, config::LrDecay::kConstant, 0.5);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 10, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 99, 100), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(schedule_of(0, config::LrDecay::kConstant, 0), 1e-3, 0, 100), 1e-3);  // no warmup
}

TEST(LearningRate, CosineDecay) {
  // Warmup 10 of 101 steps: the decay runs over steps 10..100 (90 steps).
  const config::ScheduleSection s = schedule_of(10, config::LrDecay::kCosine, 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 10, 101), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 55, 101), (0.1 + 0.9 * 0.5) * 1e-3);  // halfway
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 100, 101), 0.1 * 1e-3);               // last step: the floor
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 150, 101), 0.1 * 1e-3);               // past the end: stays
  // No warmup, min 0: a quarter of the way, 0.5 * (1 + cos(pi / 4)).
  const config::ScheduleSection plain = schedule_of(0, config::LrDecay::kCosine, 0.0);
  EXPECT_DOUBLE_EQ(learning_rate(plain, 1.0, 0, 101), 1.0);
  EXPECT_NEAR(learning_rate(plain, 1.0, 25, 101), 0.8535533905932737, 1e-15);
  EXPECT_NEAR(learning_rate(plain, 1.0, 100, 101), 0.0, 1e-15);
}

TEST(LearningRate, LinearDecay) {
  const config::ScheduleSection s = schedule_of(10, config::LrDecay::kLinear, 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 0, 101), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 10, 101), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 28, 101), (0.1 + 0.9 * 0.8) * 1e-3);  // t = 18/90 = 0.2
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 55, 101), 0.55e-3);
  EXPECT_DOUBLE_EQ(learning_rate(s, 1e-3, 100, 101), 1e-4);
}

// ---- clip_grad_norm ----

std::vector<at::Tensor> random_grads(uint64_t seed, double scale) {
  at::manual_seed(seed);
  std::vector<at::Tensor> grads;
  for (const auto& shape : kShapes) grads.push_back(at::randn(shape) * scale);
  return grads;
}

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.clone());
  return out;
}

// torch::nn::utils::clip_grad_norm_ on parameters carrying copies of `grads`; returns (norm, grads).
std::pair<double, std::vector<at::Tensor>> torch_clip(const std::vector<at::Tensor>& grads, double max_norm) {
  std::vector<at::Tensor> params;
  for (const auto& g : grads) {
    params.push_back(at::zeros_like(g).requires_grad_(true));
    params.back().mutable_grad() = g.clone();
  }
  const double norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  std::vector<at::Tensor> clipped;
  for (const auto& p : params) clipped.push_back(p.grad());
  return {norm, clipped};
}

void expect_clip_matches_torch(double scale, double max_norm) {
  const auto grads = random_grads(21, scale);
  const auto [torch_norm, torch_grads] = torch_clip(grads, max_norm);
  auto ours = clones(grads);
  const double norm = clip_grad_norm(ours, max_norm);
  EXPECT_NEAR(norm, torch_norm, 1e-6 * torch_norm);
  bool bitwise = true;
  double max_rel = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    bitwise = bitwise && bitwise_equal(ours[i], torch_grads[i]);
    max_rel = std::max(max_rel, max_relative_diff(ours[i], torch_grads[i]));
  }
  std::cout << "[ info     ] clip_grad_norm (norm " << norm << ", max_norm " << max_norm
            << ") vs torch::nn::utils::clip_grad_norm_: norm diff " << std::abs(norm - torch_norm) << ", clipped grads "
            << (bitwise ? std::string("bitwise equal") : fmt::format("max relative diff {:.3g}", max_rel)) << "\n";
  EXPECT_LE(max_rel, 1e-6);
}

TEST(ClipGradNorm, MatchesTorchWhenClipping) { expect_clip_matches_torch(1.0, 1.0); }

TEST(ClipGradNorm, LeavesSmallGradientsAlone) {
  expect_clip_matches_torch(1e-3, 1.0);
  const auto grads = random_grads(22, 1e-3);
  auto ours = clones(grads);
  clip_grad_norm(ours, 1.0);
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(bitwise_equal(ours[i], grads[i]));
}

TEST(ClipGradNorm, ZeroMaxNormOnlyMeasures) {
  const auto grads = random_grads(23, 1.0);
  auto ours = clones(grads);
  double expected = 0;
  for (const auto& g : grads) expected += g.pow(2).sum().item<double>();
  EXPECT_NEAR(clip_grad_norm(ours, 0.0), std::sqrt(expected), 1e-5 * std::sqrt(expected));
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(bitwise_equal(ours[i], grads[i]));
}

TEST(ClipGradNorm, NonFiniteGradientReturnsNonFiniteAndScalesNothing) {
  auto grads = random_grads(24, 10.0);
  grads[2].view(-1)[4] = std::nan("");
  auto ours = clones(grads);
  EXPECT_FALSE(std::isfinite(clip_grad_norm(ours, 1.0)));
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(bitwise_equal(ours[i], grads[i])) << i;
  grads[2].view(-1)[4] = std::numeric_limits<float>::infinity();
  ours = clones(grads);
  EXPECT_FALSE(std::isfinite(clip_grad_norm(ours, 1.0)));
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(bitwise_equal(ours[i], grads[i])) << i;
}

TEST(ClipGradNorm, AllReduceHookSumsSquaredNorms) {
  const auto grads = random_grads(25, 1.0);
  auto local = clones(grads), two_ranks = clones(grads);
  const double norm = clip_grad_norm(local, 0.0);
  int calls = 0;
  // Two ranks holding the same gradients: the squared norm doubles.
  const double global = clip_grad_norm(two_ranks, 0.0, [&](at::Tensor& squared) {
    ++calls;
    EXPECT_EQ(squared.dim(), 0);
    EXPECT_EQ(squared.scalar_type(), at::kFloat);
    squared.mul_(2);
  });
  EXPECT_EQ(calls, 1);
  EXPECT_NEAR(global, std::sqrt(2.0) * norm, 1e-6 * global);
}

TEST(ClipGradNorm, BFloat16GradsAccumulateInFloat32) {
  // 4096 equal bf16 values: a bf16 accumulation would round the sum of squares; fp32 does not.
  std::vector<at::Tensor> grads = {at::full({4096}, 0.01, at::kBFloat16), at::full({3}, 0.5, at::kBFloat16)};
  const double expected = std::sqrt(4096 * std::pow(static_cast<double>(at::full({}, 0.01, at::kBFloat16).item<float>()), 2) +
                                    3 * 0.25);
  const double norm = clip_grad_norm(grads, 0.5);
  EXPECT_NEAR(norm, expected, 1e-6 * expected);
  EXPECT_EQ(grads[0].scalar_type(), at::kBFloat16);
  // Scaled down to about max_norm.
  const double after = std::sqrt(grads[0].to(at::kFloat).pow(2).sum().item<double>() +
                                 grads[1].to(at::kFloat).pow(2).sum().item<double>());
  EXPECT_NEAR(after, 0.5, 0.01);
}

TEST(ClipGradNorm, CudaMatchesTorch) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  std::vector<at::Tensor> grads;
  for (const auto& g : random_grads(26, 1.0)) grads.push_back(g.to(at::kCUDA));
  const auto [torch_norm, torch_grads] = torch_clip(grads, 1.0);
  auto ours = clones(grads);
  const double norm = clip_grad_norm(ours, 1.0);
  EXPECT_NEAR(norm, torch_norm, 1e-6 * torch_norm);
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_TRUE(ours[i].is_cuda());
    EXPECT_LE(max_relative_diff(ours[i], torch_grads[i]), 1e-6) << i;
  }
  grads[1].view(-1)[0] = std::nan("");
  ours = clones(grads);
  EXPECT_FALSE(std::isfinite(clip_grad_norm(ours, 1.0)));
  for (size_t i = 0; i < ours.size(); ++i)
    EXPECT_TRUE(bitwise_equal(ours[i].cpu(), grads[i].cpu())) << i;
}

TEST(ClipGradNorm, EmptyListIsZero) {
  std::vector<at::Tensor> none;
  EXPECT_EQ(clip_grad_norm(none, 1.0), 0.0);
}

}  // namespace
}  // namespace longtune::trainer
