// `longtune eval perplexity`: NLL / perplexity of a model over a token file in consecutive,
// non-overlapping windows, each scored as HF's model(ids, labels=ids).loss scores it.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>
#include <iostream>

#include "common/check.h"
#include "common/log.h"
#include "model/loss.h"
#include "trainer/cli.h"
#include "trainer/cli_common.h"

namespace longtune::cli {

namespace {

struct PerplexityArgs {
  std::string model_dir;
  std::string tokens_file;
  int64_t seq_len = 0;
  std::string rope;
  std::string dtype = "float32";
};

void run_perplexity(const PerplexityArgs& args) {
  model::Llama llama = load_model(args.model_dir, args.dtype, args.rope);
  at::Tensor tokens = read_token_file(args.tokens_file, llama->config().vocab_size);
  const int64_t n = tokens.numel();
  const int64_t window = args.seq_len > 0 ? args.seq_len : n;
  LT_CHECK(window >= 2, "--seq-len must be at least 2, got {}", window);

  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  double nll_sum = 0.0;
  int64_t predicted = 0, windows = 0;
  for (int64_t begin = 0; begin < n; begin += window) {
    const int64_t length = std::min(window, n - begin);
    if (length < 2) break;  // a 1-token tail predicts nothing
    at::Tensor ids = tokens.narrow(0, begin, length).unsqueeze(0);  // (1, length)
    at::Tensor loss = model::causal_lm_loss(llama->forward(ids), ids);
    nll_sum += loss.item<double>() * static_cast<double>(length - 1);
    predicted += length - 1;
    ++windows;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double nll = nll_sum / static_cast<double>(predicted);
  nlohmann::json result = {{"nll", nll},          {"ppl", std::exp(nll)}, {"tokens", predicted},
                           {"windows", windows},  {"seq_len", window},    {"seconds", seconds}};
  std::cout << result.dump() << std::endl;
}

}  // namespace

void add_eval_command(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a model");
  eval->require_subcommand(1);
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* ppl = eval->add_subcommand(
      "perplexity",
      "NLL and perplexity over a file of whitespace-separated token ids, in consecutive non-overlapping windows "
      "(no BOS added); prints one JSON line");
  ppl->add_option("--model", args->model_dir, "HF model directory (config.json + safetensors)")->required();
  ppl->add_option("--tokens", args->tokens_file, "file of whitespace-separated token ids")->required();
  ppl->add_option("--seq-len", args->seq_len, "window length (default: the whole file as one window)");
  ppl->add_option("--rope-scaling", args->rope, "override RoPE scaling: TYPE:FACTOR[:ORIGINAL], e.g. linear:4");
  ppl->add_option("--dtype", args->dtype, "compute dtype: float32|bfloat16")->capture_default_str();
  ppl->callback([args] { run_perplexity(*args); });
}

}  // namespace longtune::cli
