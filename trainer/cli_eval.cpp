// `longtune eval perplexity`: perplexity of a model (HF directory or checkpoint) either over the
// documents of a prepared split with the PI paper's sliding-window protocol (or plain chunks), or
// over a raw token file in consecutive windows scored as HF's model(ids, labels=ids).loss.
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
#include "data/prepared_data.h"
#include "trainer/device.h"
#include "trainer/perplexity.h"

namespace longtune::cli {

namespace {

struct PerplexityArgs {
  std::string model_dir;
  std::string tokens_file;
  int64_t seq_len = 0;
  std::string rope;
  std::string dtype = "float32";
  // prepared-data mode
  std::string data_dir;
  std::string split = "test";
  int64_t window = 0;
  int64_t stride = 256;
  std::string mode = "sliding";
  int64_t batch = 1;
  uint64_t max_documents = 0;
  bool quiet = false;
};

void run_data_perplexity(const PerplexityArgs& args) {
  model::Llama llama = load_model(args.model_dir, args.dtype, args.rope);
  const data::PreparedSplit split(args.data_dir, args.split);
  LT_CHECK(split.manifest().tokenizer.vocab_size <= llama->config().vocab_size,
           "{}: tokenized with {} pieces, more than the model's vocabulary of {}", args.data_dir,
           split.manifest().tokenizer.vocab_size, llama->config().vocab_size);
  trainer::PerplexityOptions options;
  LT_CHECK(args.mode == "sliding" || args.mode == "chunks", "--mode must be sliding or chunks, got '{}'", args.mode);
  options.mode = args.mode == "sliding" ? data::EvalMode::kSlidingWindow : data::EvalMode::kChunks;
  options.window = args.window > 0 ? args.window : llama->config().max_position_embeddings;
  options.stride = args.stride;
  options.batch = args.batch;
  options.max_documents = args.max_documents;
  options.bos_id = split.bos_id();
  options.progress = !args.quiet;
  llama->to(trainer::pick_device());
  const trainer::PerplexityResult r = trainer::evaluate_perplexity(*llama, split, options);
  nlohmann::ordered_json result = {
      {"ppl", r.ppl},          {"mean_window_nll", r.mean_window_nll}, {"token_ppl", r.token_ppl},
      {"token_nll", r.token_nll}, {"windows", r.windows},             {"scored_tokens", r.scored_tokens},
      {"documents", r.documents}, {"window", options.window},         {"stride", options.stride},
      {"mode", args.mode},     {"split", split.split_name()},         {"seconds", r.seconds}};
  std::cout << result.dump() << std::endl;
}

void run_perplexity(const PerplexityArgs& args) {
  LT_CHECK(args.data_dir.empty() != args.tokens_file.empty(), "eval perplexity: give exactly one of --data or --tokens");
  if (!args.data_dir.empty()) return run_data_perplexity(args);
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
      "Perplexity over a prepared split (--data: sliding windows with BOS, the PI paper's protocol) or over a "
      "file of token ids (--tokens: consecutive windows, no BOS); prints one JSON line");
  ppl->add_option("--model", args->model_dir, "HF model directory, or a training checkpoint (step or run directory)")
      ->required();
  ppl->add_option("--data", args->data_dir, "prepared-data directory (or a split folder inside one)");
  ppl->add_option("--split", args->split, "split of --data")->capture_default_str();
  ppl->add_option("--window", args->window, "--data: window W in tokens incl. BOS (default: the model's window)");
  ppl->add_option("--stride", args->stride, "--data: sliding-window stride S")->capture_default_str();
  ppl->add_option("--mode", args->mode, "--data: sliding | chunks")->capture_default_str();
  ppl->add_option("--batch", args->batch, "--data: windows per forward pass")->capture_default_str();
  ppl->add_option("--max-documents", args->max_documents, "--data: only the first N documents (0: all)");
  ppl->add_flag("--quiet", args->quiet, "no progress line");
  ppl->add_option("--tokens", args->tokens_file, "file of whitespace-separated token ids");
  ppl->add_option("--seq-len", args->seq_len, "--tokens: window length (default: the whole file as one window)");
  ppl->add_option("--rope-scaling", args->rope, "override RoPE scaling: TYPE:FACTOR[:ORIGINAL], e.g. linear:4");
  ppl->add_option("--dtype", args->dtype, "compute dtype: float32|bfloat16")->capture_default_str();
  ppl->callback([args] { run_perplexity(*args); });
}

}  // namespace longtune::cli
