// `longtune eval perplexity`: perplexity of a model (HF directory or checkpoint, RoPE scaling
// overridable) over the documents of a prepared split or of a token file (one document per line),
// for one or several window sizes in one run, with the PI paper's sliding-window protocol (or
// plain chunks); one JSON line per window on stdout and, with --out, one JSON file. Under a launcher
// the documents are split over the ranks and the sums all-reduced (rank 0 reports). Also the plain
// mode: a raw token file in consecutive windows scored as HF's model(ids, labels=ids).loss.
// `longtune eval passkey` registers itself from cli_eval_passkey.cpp.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <memory>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "data/prepared_data.h"
#include "model/loss.h"
#include "cli/cli.h"
#include "cli/cli_common.h"
#include "trainer/device.h"
#include "dist/dist_env.h"
#include "eval/perplexity.h"
#include "eval/result_files.h"
#include "dist/process_group.h"

namespace longtune::cli {

namespace {

struct PerplexityArgs {
  std::string model_dir;
  std::string tokens_file;
  int64_t seq_len = 0;
  std::string rope;
  EvalLaunchArgs launch;
  // document mode (prepared split or --tokens with --window/--windows)
  std::string data_dir;
  std::string split = "test";
  int64_t window = 0;
  std::vector<int64_t> windows;
  int64_t stride = 256;
  double stride_fraction = 0;  // > 0: stride = floor(fraction * window) for each window
  std::string mode = "sliding";
  int64_t batch = 1;
  uint64_t max_documents = 0;
  uint64_t min_document_tokens = 0;
  uint64_t truncate = 0;
  int64_t bos_id = -1;
  std::string out;
  bool quiet = false;
};

// The documents scored: a prepared split, or the lines of a token file.
struct EvalDocuments {
  std::unique_ptr<data::TokenDocuments> documents;
  int64_t bos_id = 1;
  std::string description;
};

EvalDocuments open_documents(const PerplexityArgs& args, const model::ModelConfig& config) {
  EvalDocuments out;
  if (!args.data_dir.empty()) {
    auto split = std::make_unique<data::PreparedSplit>(args.data_dir, args.split);
    LT_CHECK(split->manifest().tokenizer.vocab_size <= config.vocab_size,
             "{}: tokenized with {} pieces, more than the model's vocabulary of {}", args.data_dir,
             split->manifest().tokenizer.vocab_size, config.vocab_size);
    out.bos_id = split->bos_id();
    out.description = fmt::format("{} (split {})", args.data_dir, split->split_name());
    out.documents = std::move(split);
  } else {
    out.documents = std::make_unique<data::InMemoryDocuments>(read_token_documents(args.tokens_file, config.vocab_size));
    out.bos_id = config.bos_token_id;
    out.description = args.tokens_file;
  }
  if (args.bos_id >= 0) out.bos_id = args.bos_id;
  LT_CHECK(out.bos_id < config.vocab_size, "--bos-id {} is outside the vocabulary of {}", out.bos_id,
           config.vocab_size);
  return out;
}

void run_document_perplexity(const PerplexityArgs& args) {
  LT_CHECK(args.mode == "sliding" || args.mode == "chunks", "--mode must be sliding or chunks, got '{}'", args.mode);
  // Under a launcher the model is sharded full_shard over the ranks (or, with --sharding no_shard,
  // every rank holds it whole), the windows are split over the ranks by cost, and the partial sums
  // are all-reduced; rank 0 prints and writes the result.
  const EvalSetup setup = setup_eval(args.model_dir, args.rope, args.launch);
  const dist::DistEnv& env = setup.env;
  const c10::Device& device = setup.device;
  const std::unique_ptr<dist::ProcessGroup>& group = setup.group;
  const bool leader = setup.leader();
  model::Llama llama = setup.model.llama;
  const EvalDocuments docs = open_documents(args, llama->config());
  std::vector<int64_t> windows = args.windows;
  if (args.window > 0) windows.insert(windows.begin(), args.window);
  if (windows.empty()) windows.push_back(llama->config().max_position_embeddings);
  for (int64_t w : windows) LT_CHECK(w >= 2, "--window/--windows: a window must be at least 2 tokens, got {}", w);

  eval::PerplexityOptions options;
  options.mode = args.mode == "sliding" ? data::EvalMode::kSlidingWindow : data::EvalMode::kChunks;
  options.stride = args.stride;
  options.batch = args.batch;
  options.documents = {args.max_documents, args.min_document_tokens, args.truncate};
  options.bos_id = docs.bos_id;
  options.progress = !args.quiet && leader;
  options.lockstep = setup.model.sharded();
  eval::PerplexityReport report;
  LT_CHECK(args.stride_fraction >= 0 && args.stride_fraction < 1, "--stride-fraction must be in [0, 1), got {}",
           args.stride_fraction);
  for (int64_t w : windows) {
    options.window = w;
    if (args.stride_fraction > 0)
      options.stride = std::max<int64_t>(1, static_cast<int64_t>(args.stride_fraction * static_cast<double>(w)));
    const auto start = std::chrono::steady_clock::now();
    eval::PerplexityPartial partial =
        eval::evaluate_perplexity_partial(*llama, *docs.documents, options, env.rank, env.world_size);
    if (group) partial = eval::PerplexityPartial::from_sums(dist::all_reduce_sum(*group, partial.sums(), device));
    eval::PerplexityResult r = eval::finalize_perplexity(partial);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!leader) continue;
    eval::PerplexityRun run{r, w, options.stride, args.mode, std::nullopt};
    if (!args.data_dir.empty()) run.split = args.split;
    LT_INFO("eval perplexity W={}: ppl {:.4f} (token-weighted {:.4f}) over {} windows, {} tokens, {:.1f} s", w, r.ppl,
            r.token_ppl, r.windows, r.scored_tokens, r.seconds);
    std::cout << eval::perplexity_run_json(run) << std::endl;
    report.results.push_back(std::move(run));
  }
  if (!args.out.empty() && leader) {
    report.model = args.model_dir;
    report.ranks = env.world_size;
    report.rope_scaling = args.rope.empty() ? "model's own" : args.rope;
    report.documents = docs.description;
    if (args.min_document_tokens > 0)
      report.documents += fmt::format(", documents of at least {} tokens", args.min_document_tokens);
    if (args.max_documents > 0) report.documents += fmt::format(", the first {}", args.max_documents);
    if (args.truncate > 0) report.documents += fmt::format(", each read to its first {} tokens", args.truncate);
    report.protocol = args.mode == "sliding"
                          ? "sliding window, BOS prepended, new tokens scored, ppl = exp(mean of window mean NLL)"
                          : "chunks of W-1 tokens, BOS prepended";
    write_file_atomic(args.out, eval::perplexity_report_json(report));
  }
}

void run_plain_perplexity(const PerplexityArgs& args) {
  model::Llama llama = load_model(args.model_dir, eval_dtype(args.launch.dtype, c10::Device(c10::kCPU)), args.rope);
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
  if (!args.out.empty()) write_file_atomic(args.out, result.dump(1) + "\n");
}

void run_perplexity(const PerplexityArgs& args) {
  LT_CHECK(args.data_dir.empty() != args.tokens_file.empty(), "eval perplexity: give exactly one of --data or --tokens");
  const bool document_mode = !args.data_dir.empty() || args.window > 0 || !args.windows.empty();
  LT_CHECK(!(document_mode && args.seq_len > 0),
           "eval perplexity: --seq-len is for plain --tokens windows; use --window/--windows with the sliding protocol");
  if (document_mode) return run_document_perplexity(args);
  run_plain_perplexity(args);
}

}  // namespace

void add_eval_command(CLI::App& app) {
  CLI::App* eval = app.add_subcommand("eval", "Evaluate a model");
  eval->require_subcommand(1);
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* ppl = eval->add_subcommand(
      "perplexity",
      "Perplexity with the PI paper's protocol (sliding window W, stride S, BOS prepended, new tokens scored, "
      "ppl = exp(mean of window mean NLL), token-weighted ppl alongside) over a prepared split (--data) or a token "
      "file with one document per line (--tokens with --window/--windows); one JSON line per window. --tokens "
      "without --window: consecutive windows of --seq-len, no BOS");
  ppl->add_option("--model", args->model_dir, "HF model directory, or a training checkpoint (step or run directory)")
      ->required();
  ppl->add_option("--data", args->data_dir, "prepared-data directory (or a split folder inside one)");
  ppl->add_option("--split", args->split, "split of --data")->capture_default_str();
  ppl->add_option("--window", args->window, "window W in tokens incl. BOS (default: the model's window)");
  ppl->add_option("--windows", args->windows, "several windows in one run, e.g. 2048,4096,8192")->delimiter(',');
  ppl->add_option("--stride", args->stride, "sliding-window stride S")->capture_default_str();
  ppl->add_option("--stride-fraction", args->stride_fraction,
                  "instead of --stride: S = fraction x W for each window (e.g. 0.5: each window scores its second half)");
  ppl->add_option("--mode", args->mode, "sliding | chunks")->capture_default_str();
  ppl->add_option("--batch", args->batch, "windows per forward pass")->capture_default_str();
  ppl->add_option("--max-documents", args->max_documents, "only the first N documents selected (0: all)");
  ppl->add_option("--min-document-tokens", args->min_document_tokens,
                  "only documents of at least N tokens (the paper's Proof-pile set: 32768)");
  ppl->add_option("--truncate", args->truncate, "read each document to its first N tokens (0: whole)");
  ppl->add_option("--bos-id", args->bos_id, "BOS id (default: the prepared data's, or the model config's for --tokens)");
  ppl->add_option("--out", args->out, "also write the results as one JSON file");
  ppl->add_flag("--quiet", args->quiet, "no progress line");
  ppl->add_option("--tokens", args->tokens_file, "file of whitespace-separated token ids (one document per line)");
  ppl->add_option("--seq-len", args->seq_len, "plain --tokens mode: window length (default: the whole file)");
  ppl->add_option("--rope-scaling", args->rope, "override RoPE scaling: TYPE:FACTOR[:ORIGINAL], e.g. linear:4");
  add_eval_launch_options(*ppl, args->launch);
  ppl->callback([args] { run_perplexity(*args); });
  add_eval_passkey_command(*eval);
}

}  // namespace longtune::cli
