#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

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

namespace {

// The windows of the documents this rank scores, in document order.
std::vector<data::EvalWindow> rank_windows(const data::TokenDocuments& documents, const PerplexityOptions& options,
                                           int rank, int world, double* rank_documents) {
  uint64_t n = documents.num_documents();
  if (options.max_documents != 0) n = std::min(n, options.max_documents);
  std::vector<data::EvalWindow> windows;
  *rank_documents = 0;
  for (uint64_t doc = static_cast<uint64_t>(rank); doc < n; doc += static_cast<uint64_t>(world)) {
    const uint64_t len = documents.document_length(doc);
    if (len == 0) continue;
    const auto doc_windows = options.mode == data::EvalMode::kSlidingWindow
                                 ? data::sliding_windows(doc, len, options.window, options.stride)
                                 : data::chunk_windows(doc, len, options.window);
    windows.insert(windows.end(), doc_windows.begin(), doc_windows.end());
    *rank_documents += 1;
  }
  return windows;
}

}  // namespace

PerplexityPartial evaluate_perplexity_partial(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                              const PerplexityOptions& options, int rank, int world) {
  LT_CHECK(options.batch >= 1, "eval batch must be >= 1, got {}", options.batch);
  LT_CHECK(world >= 1 && rank >= 0 && rank < world, "perplexity: rank {} is not in [0, world {})", rank, world);
  const auto start = std::chrono::steady_clock::now();
  PerplexityPartial partial;
  const std::vector<data::EvalWindow> windows = rank_windows(documents, options, rank, world, &partial.documents);
  if (windows.empty()) return partial;
  const at::Device device = model.parameters().front().device();

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  ProgressLine progress(options.progress);
  size_t next = 0;
  while (next < windows.size()) {
    // A batch of consecutive windows with the same input length.
    const uint64_t length = windows[next].end - windows[next].begin + 1;
    size_t end = next;
    while (end < windows.size() && static_cast<int64_t>(end - next) < options.batch &&
           windows[end].end - windows[end].begin + 1 == length)
      ++end;
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
    next = end;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.update(fmt::format("eval W={} {} {}/{} windows | ppl so far {:.3f} | ETA {}", options.window,
                                ProgressLine::bar(static_cast<double>(next) / windows.size()), next, windows.size(),
                                std::exp(partial.window_nll_sum / partial.windows),
                                ProgressLine::duration(elapsed / next * (windows.size() - next))));
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
