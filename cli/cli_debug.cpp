// `longtune debug logits`: runs a model on given tokens and writes logits, loss and (optionally)
// parameter gradients to a safetensors file, so anyone can compare our numbers with another
// implementation (our HF-parity tests do exactly that). `longtune debug train`: `longtune train`
// with faults injected through the step's test seam (a NaN loss at chosen steps, to drill
// train.nan_policy); for tests, not for training.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <limits>
#include <sstream>

#include "common/check.h"
#include "model/loss.h"
#include "model/safetensors.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "trainer/train_step.h"

namespace longtune::cli {

namespace {

struct LogitsArgs {
  std::string model_dir, tokens_file, out, rope, dtype = "float32";
  int64_t batch = 1;
  bool backward = false;
  bool activation_checkpointing = false;
};

// "3,7" -> {3, 7}; names the option on anything else.
std::vector<int64_t> parse_steps(const std::string& text) {
  std::vector<int64_t> steps;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    size_t used = 0;
    int64_t step = 0;
    try {
      step = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    LT_CHECK(used == item.size() && !item.empty() && step >= 1,
             "--nan-loss-at-steps: '{}' is not a step number (1, 2, ...)", item);
    steps.push_back(step);
  }
  return steps;
}

// Poisons the loss of the chosen optimizer steps.
class NanLossAtSteps final : public trainer::StepProbe {
 public:
  explicit NanLossAtSteps(std::vector<int64_t> steps) : steps_(std::move(steps)) {}
  void on_loss(int64_t step, at::Tensor& nll_sum) override {
    if (std::find(steps_.begin(), steps_.end(), step) != steps_.end())
      nll_sum = nll_sum * std::numeric_limits<double>::quiet_NaN();
  }

 private:
  std::vector<int64_t> steps_;
};

void run_logits(const LogitsArgs& args) {
  model::Llama llama = load_model(args.model_dir, args.dtype, args.rope);
  at::Tensor tokens = read_token_file(args.tokens_file, llama->config().vocab_size);
  LT_CHECK(tokens.numel() % args.batch == 0, "{} tokens do not split into --batch {} rows", tokens.numel(),
           args.batch);
  at::Tensor ids = tokens.view({args.batch, -1});  // (B, T)
  std::vector<std::pair<std::string, at::Tensor>> out;
  if (args.backward) {
    llama->train();
    llama->set_activation_checkpointing(args.activation_checkpointing);
    at::Tensor logits = llama->forward(ids);
    at::Tensor loss = model::causal_lm_loss(logits, ids);
    loss.backward();
    out.emplace_back("logits", logits.detach().to(at::kFloat));
    out.emplace_back("loss", loss.detach());
    for (const auto& p : llama->named_parameters()) out.emplace_back("grad." + p.key(), p.value().grad().to(at::kFloat));
  } else {
    torch::NoGradGuard no_grad;
    at::Tensor logits = llama->forward(ids);
    out.emplace_back("logits", logits.to(at::kFloat));
    out.emplace_back("loss", model::causal_lm_loss(logits, ids));
  }
  model::save_safetensors(args.out, out);
}

}  // namespace

void add_debug_command(CLI::App& app) {
  CLI::App* debug = app.add_subcommand("debug", "Numbers for checking longtune against other implementations, and faults for tests");
  debug->require_subcommand(1);
  auto args = std::make_shared<LogitsArgs>();
  CLI::App* logits = debug->add_subcommand(
      "logits", "Write logits, mean loss and (with --backward) parameter gradients to a safetensors file");
  logits->add_option("--model", args->model_dir, "HF model directory")->required();
  logits->add_option("--tokens", args->tokens_file, "file of whitespace-separated token ids")->required();
  logits->add_option("--out", args->out, "output .safetensors file")->required();
  logits->add_option("--batch", args->batch, "split the tokens into this many rows")->capture_default_str();
  logits->add_option("--rope-scaling", args->rope, "override RoPE scaling: TYPE:FACTOR[:ORIGINAL]");
  logits->add_option("--dtype", args->dtype, "float32|bfloat16")->capture_default_str();
  logits->add_flag("--backward", args->backward, "also compute gradients of the mean loss");
  logits->add_flag("--activation-checkpointing", args->activation_checkpointing, "recompute layers in backward");
  logits->callback([args] { run_logits(*args); });

  auto train_args = std::make_shared<TrainArgs>();
  auto nan_steps = std::make_shared<std::string>();
  CLI::App* train = debug->add_subcommand("train", "`longtune train` with a NaN loss injected at chosen steps (tests)");
  add_train_options(*train, *train_args);
  train->add_option("--nan-loss-at-steps", *nan_steps, "optimizer steps (1-based, comma-separated) whose loss becomes NaN")
      ->required();
  train->callback([train_args, nan_steps, &app] {
    train_args->log_level = app.get_option("--log-level")->as<std::string>();
    NanLossAtSteps probe(parse_steps(*nan_steps));
    run_train(*train_args, &probe);
  });
}

}  // namespace longtune::cli
