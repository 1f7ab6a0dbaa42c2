// `longtune smoke`: builds a random model from a preset and trains it for a few AdamW steps on a
// fixed batch of generated tokens, printing loss and speed. A first check that the build works
// end to end (forward, backward, optimizer) on this machine; not a training run.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <torch/optim/adamw.h>

#include <chrono>

#include "common/check.h"
#include "common/log.h"
#include "model/hf_checkpoint.h"
#include "model/llama.h"
#include "model/loss.h"
#include "cli/cli.h"

namespace longtune::cli {

namespace {

struct SmokeArgs {
  std::string preset = "tiny";
  int64_t steps = 20, batch = 4, seq_len = 128;
  uint64_t seed = 1234;
  std::string dtype = "float32";
  bool activation_checkpointing = false;
};

void run_smoke(const SmokeArgs& args) {
  LT_CHECK(args.steps > 0 && args.batch > 0 && args.seq_len >= 2, "smoke: steps, batch > 0 and seq-len >= 2 required");
  at::manual_seed(args.seed);
  model::ModelConfig config = model::model_preset(args.preset);
  model::Llama llama(config);
  llama->to(model::dtype_from_name(args.dtype));
  llama->set_activation_checkpointing(args.activation_checkpointing);
  llama->train();
  LT_INFO("smoke: preset {} ({:.2f} M parameters), batch {} x {} tokens, {} steps, {}, activation checkpointing {}",
          args.preset, config.num_parameters() / 1e6, args.batch, args.seq_len, args.steps, args.dtype,
          args.activation_checkpointing ? "on" : "off");

  // A learnable stream: each row counts upward modulo a small period from a random start, so a
  // working model drives the loss well below log(vocab).
  const int64_t period = std::min<int64_t>(64, config.vocab_size);
  at::Tensor starts = at::randint(period, {args.batch, 1}, at::kLong);
  at::Tensor tokens = (starts + at::arange(args.seq_len, at::kLong)).remainder(period);  // (B, T)

  torch::optim::AdamW optimizer(llama->parameters(),
                                torch::optim::AdamWOptions(3e-3).betas({0.9, 0.95}).weight_decay(0.0));
  double first = 0, last = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= args.steps; ++step) {
    optimizer.zero_grad();
    at::Tensor loss = model::causal_lm_loss(llama->forward(tokens), tokens);
    loss.backward();
    optimizer.step();
    last = loss.item<double>();
    if (step == 1) first = last;
    LT_CHECK(std::isfinite(last), "smoke: loss is not finite at step {}", step);
    if (step == 1 || step % 5 == 0 || step == args.steps) LT_INFO("step {:4d}  loss {:.4f}", step, last);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LT_INFO("smoke: loss {:.4f} -> {:.4f} (log(vocab) = {:.4f}) in {:.2f} s, {:.0f} tokens/s", first, last,
          std::log(static_cast<double>(config.vocab_size)), seconds,
          args.steps * args.batch * args.seq_len / seconds);
  LT_CHECK(last < first, "smoke: loss did not decrease ({} -> {})", first, last);
}

}  // namespace

void add_smoke_command(CLI::App& app) {
  auto args = std::make_shared<SmokeArgs>();
  CLI::App* cmd = app.add_subcommand("smoke", "Train a tiny random model a few steps on generated tokens");
  cmd->add_option("--preset", args->preset, "model preset")->capture_default_str();
  cmd->add_option("--steps", args->steps, "optimizer steps")->capture_default_str();
  cmd->add_option("--batch", args->batch, "sequences per step")->capture_default_str();
  cmd->add_option("--seq-len", args->seq_len, "tokens per sequence")->capture_default_str();
  cmd->add_option("--seed", args->seed, "random seed")->capture_default_str();
  cmd->add_option("--dtype", args->dtype, "float32|bfloat16")->capture_default_str();
  cmd->add_flag("--activation-checkpointing", args->activation_checkpointing, "recompute layers in backward");
  cmd->callback([args] { run_smoke(*args); });
}

}  // namespace longtune::cli
