#include "trainer/perplexity.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/autograd.h>

#include <chrono>
#include <cmath>

#include "common/check.h"
#include "common/progress.h"

namespace longtune::trainer {

PerplexityResult evaluate_perplexity(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                     const PerplexityOptions& options) {
  LT_CHECK(options.batch >= 1, "eval batch must be >= 1, got {}", options.batch);
  const auto start = std::chrono::steady_clock::now();
  const std::vector<data::EvalWindow> windows =
      data::plan_eval_windows(documents, options.mode, options.window, options.stride, options.max_documents);
  LT_CHECK(!windows.empty(), "no evaluation windows: the documents are empty");
  const at::Tensor probe = model.parameters().front();
  const at::Device device = probe.device();

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  PerplexityResult result;
  double window_nll_sum = 0, token_nll_sum = 0;
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
    at::Tensor logits = model.forward(input_ids).to(at::kFloat);                             // (B, T, V)
    // HF's shift: position i predicts label i + 1.
    at::Tensor shifted_logits = logits.slice(1, 0, t - 1).reshape({-1, logits.size(-1)});  // (B*(T-1), V)
    at::Tensor shifted_labels = label_ids.slice(1, 1).reshape({-1});                        // (B*(T-1))
    at::Tensor nll = at::cross_entropy_loss(shifted_logits, shifted_labels, {}, at::Reduction::None, -100)
                         .reshape({rows, t - 1});                                            // (B, T-1)
    at::Tensor scored = shifted_labels.reshape({rows, t - 1}).ne(-100);
    at::Tensor per_window_sum = nll.to(at::kDouble).sum(1);
    at::Tensor per_window_count = scored.sum(1).to(at::kDouble);
    const auto sums = per_window_sum.cpu();
    const auto counts = per_window_count.cpu();
    for (int64_t r = 0; r < rows; ++r) {
      const double sum = sums[r].item<double>(), count = counts[r].item<double>();
      window_nll_sum += sum / count;
      token_nll_sum += sum;
      result.scored_tokens += static_cast<int64_t>(count);
    }
    result.windows += rows;
    next = end;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.update(fmt::format("eval {} {}/{} windows | ppl so far {:.3f} | ETA {}",
                                ProgressLine::bar(static_cast<double>(next) / windows.size()), next, windows.size(),
                                std::exp(window_nll_sum / result.windows),
                                ProgressLine::duration(elapsed / next * (windows.size() - next))));
  }
  progress.finish();
  if (was_training) model.train();
  result.documents = static_cast<int64_t>(windows.back().doc + 1);
  result.mean_window_nll = window_nll_sum / static_cast<double>(result.windows);
  result.ppl = std::exp(result.mean_window_nll);
  result.token_nll = token_nll_sum / static_cast<double>(result.scored_tokens);
  result.token_ppl = std::exp(result.token_nll);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace longtune::trainer
