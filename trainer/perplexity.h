// Perplexity of a model over whole documents, the PI paper's protocol: sliding windows (window W,
// stride S, BOS prepended, only the new tokens of each window scored; see data/eval_windows.h) or
// plain non-overlapping chunks. PPL = exp(mean over windows of each window's mean NLL), as
// jquesnelle/yarn's eval/perplexity.py reports it; the token-weighted figure comes alongside.
// Windows of equal length are batched. Not the training-time validation loss (trainer.cpp).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>

#include "data/documents.h"
#include "data/eval_windows.h"
#include "model/llama.h"

namespace longtune::trainer {

struct PerplexityOptions {
  data::EvalMode mode = data::EvalMode::kSlidingWindow;
  int64_t window = 2048;
  int64_t stride = 256;
  int64_t batch = 1;            // windows per forward pass
  uint64_t max_documents = 0;   // 0: all
  int64_t bos_id = 1;
  bool progress = true;
};

struct PerplexityResult {
  double ppl = 0;                // exp(mean of per-window mean NLL): the paper's figure
  double mean_window_nll = 0;
  double token_nll = 0;          // NLL averaged over every scored token
  double token_ppl = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  int64_t documents = 0;
  double seconds = 0;
};

// Runs in no-grad eval mode on the model's device and dtype (logits upcast to fp32 for the loss).
PerplexityResult evaluate_perplexity(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                     const PerplexityOptions& options);

}  // namespace longtune::trainer
