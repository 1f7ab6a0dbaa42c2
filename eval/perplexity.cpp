#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/check.h"
#include "common/progress.h"

namespace longtune::eval {

PerplexityPartial& PerplexityPartial::operator+=(const PerplexityPartial& other) {
  window_nll_sum += other.window_nll_sum;
  windows += other.windows;
  token_nll_sum += other.token_nll_sum;
  tokens += other.tokens;
  documents += other.documents;
  return *this;
}

std::vector<double> PerplexityPartial::sums() const { return {window_nll_sum, windows, token_nll_sum, tokens, documents}; }

PerplexityPartial PerplexityPartial::from_sums(const std::vector<double>& sums) {
  LT_CHECK(sums.size() == 5, "perplexity: {} partial sums, expected 5", sums.size());
  return {sums[0], sums[1], sums[2], sums[3], sums[4]};
}

namespace {

// The rank that scores each window: costliest first, each to the least loaded rank (ties to the
// lowest), so every rank computes the same split. A window of L input tokens costs L (6d + L):
// per token about 24 d^2 FLOPs of matmuls and 4 L d of attention, over 4 d.
std::vector<int> assign_windows(const std::vector<data::EvalWindow>& windows, int world, int64_t hidden) {
  std::vector<double> cost(windows.size());
  for (size_t i = 0; i < windows.size(); ++i) {
    const double length = static_cast<double>(windows[i].end - windows[i].begin + 1);
    cost[i] = length * (6.0 * static_cast<double>(hidden) + length);
  }
  std::vector<size_t> order(windows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  std::vector<double> load(static_cast<size_t>(world), 0.0);
  std::vector<int> owner(windows.size(), 0);
  for (size_t i : order) {
    const int rank = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = rank;
    load[static_cast<size_t>(rank)] += cost[i];
  }
  return owner;
}

// Consecutive windows with the same input length, at most `batch` each: [first, last) indices.
std::vector<std::pair<size_t, size_t>> batches_of(const std::vector<data::EvalWindow>& windows, int64_t batch) {
  std::vector<std::pair<size_t, size_t>> batches;
  size_t next = 0;
  while (next < windows.size()) {
    const uint64_t length = windows[next].end - windows[next].begin;
    size_t end = next;
    while (end < windows.size() && static_cast<int64_t>(end - next) < batch &&
           windows[end].end - windows[end].begin == length)
      ++end;
    batches.emplace_back(next, end);
    next = end;
  }
  return batches;
}

}  // namespace

PerplexityPartial evaluate_perplexity_partial(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                              const PerplexityOptions& options, int rank, int world) {
  LT_CHECK(options.batch >= 1, "eval batch must be >= 1, got {}", options.batch);
  LT_CHECK(world >= 1 && rank >= 0 && rank < world, "perplexity: rank {} is not in [0, world {})", rank, world);
  const auto start = std::chrono::steady_clock::now();
  PerplexityPartial partial;
  const std::vector<data::EvalWindow> every =
      data::plan_eval_windows(documents, options.mode, options.window, options.stride, options.documents);
  const std::vector<int> owner = assign_windows(every, world, model.config().hidden_size);
  std::vector<std::vector<data::EvalWindow>> per_rank(static_cast<size_t>(world));
  for (size_t i = 0; i < every.size(); ++i) {
    per_rank[static_cast<size_t>(owner[i])].push_back(every[i]);
    // A document counts once: on the rank scoring its first window.
    if (owner[i] == rank && (i == 0 || every[i - 1].doc != every[i].doc)) partial.documents += 1;
  }
  const std::vector<data::EvalWindow>& windows = per_rank[static_cast<size_t>(rank)];
  const auto batches = batches_of(windows, options.batch);
  // A sharded model gathers every unit in every forward: all ranks run as many as the busiest.
  size_t passes = batches.size();
  if (options.lockstep)
    for (const auto& other : per_rank) passes = std::max(passes, batches_of(other, options.batch).size());
  if (passes == 0) return partial;
  const at::Device device = model.parameters().front().device();

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  ProgressLine progress(options.progress);
  for (size_t pass = 0; pass < passes; ++pass) {
    if (pass >= batches.size()) {
      // Nothing left here: a two-token placeholder keeps this rank in the others' collectives.
      const at::Tensor ids = at::full({1, 2}, options.bos_id, at::TensorOptions().dtype(at::kLong).device(device));
      model.token_nll(ids, at::full({1, 2}, -100, ids.options()), options.loss_chunk_rows);
      continue;
    }
    const auto [next, end] = batches[pass];
    const uint64_t length = windows[next].end - windows[next].begin + 1;
    const int64_t rows = static_cast<int64_t>(end - next);
    std::vector<int64_t> inputs, labels;
    inputs.reserve(rows * length);
    labels.reserve(rows * length);
    for (size_t w = next; w < end; ++w) {
      const data::WindowTokens tokens = data::read_window(documents, windows[w], options.bos_id);
      inputs.insert(inputs.end(), tokens.input_ids.begin(), tokens.input_ids.end());
      labels.insert(labels.end(), tokens.labels.begin(), tokens.labels.end());
    }
    const int64_t t = static_cast<int64_t>(length);
    at::Tensor input_ids = at::from_blob(inputs.data(), {rows, t}, at::kLong).to(device);  // (B, T)
    at::Tensor label_ids = at::from_blob(labels.data(), {rows, t}, at::kLong).to(device);  // (B, T)
    // HF's shift: position i predicts label i + 1; the last position predicts nothing.
    at::Tensor targets = at::cat({label_ids.slice(1, 1), at::full({rows, 1}, -100, label_ids.options())}, 1);  // (B, T)
    at::Tensor nll = model.token_nll(input_ids, targets, options.loss_chunk_rows);  // (B, T), 0 where unscored
    const at::Tensor sums = nll.to(at::kDouble).sum(1).cpu();                       // (B)
    const at::Tensor counts = targets.ne(-100).sum(1).to(at::kDouble).cpu();        // (B)
    for (int64_t r = 0; r < rows; ++r) {
      const double sum = sums[r].item<double>(), count = counts[r].item<double>();
      partial.window_nll_sum += sum / count;
      partial.token_nll_sum += sum;
      partial.tokens += count;
    }
    partial.windows += static_cast<double>(rows);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.update(fmt::format("eval W={} {} {}/{} windows | ppl so far {:.3f} | ETA {}", options.window,
                                ProgressLine::bar(static_cast<double>(end) / windows.size()), end, windows.size(),
                                std::exp(partial.window_nll_sum / partial.windows),
                                ProgressLine::duration(elapsed / end * (windows.size() - end))));
  }
  progress.finish();
  if (was_training) model.train();
  return partial;
}

PerplexityResult finalize_perplexity(const PerplexityPartial& total) {
  LT_CHECK(total.windows > 0 && total.tokens > 0, "no evaluation windows: the documents are empty");
  PerplexityResult result;
  result.windows = std::llround(total.windows);
  result.scored_tokens = std::llround(total.tokens);
  result.documents = std::llround(total.documents);
  result.mean_window_nll = total.window_nll_sum / total.windows;
  result.ppl = std::exp(result.mean_window_nll);
  result.token_nll = total.token_nll_sum / total.tokens;
  result.token_ppl = std::exp(result.token_nll);
  return result;
}

PerplexityResult evaluate_perplexity(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                     const PerplexityOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  PerplexityResult result =
      finalize_perplexity(evaluate_perplexity_partial(model, documents, options, /*rank=*/0, /*world=*/1));
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace longtune::eval
