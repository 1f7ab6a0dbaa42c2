// Perplexity of a model over whole documents, the PI paper's protocol: sliding windows (window W,
// stride S, BOS prepended, only the new tokens of each window scored; see data/eval_windows.h) or
// plain non-overlapping chunks. PPL = exp(mean over windows of each window's mean NLL), as
// jquesnelle/yarn's eval/perplexity.py reports it; the token-weighted figure comes alongside.
// Windows of equal length are batched. Across ranks the windows (not the documents) are split by
// cost, each rank returning additive partial sums; summing the partials of all ranks (an
// all-reduce) and finalizing gives the single-process result. A sharded model (whose every forward
// is a collective) runs in lockstep: ranks with fewer batches run placeholder forwards. No process
// group here, and not the training-time validation loss (trainer.cpp).
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

#include "data/documents.h"
#include "data/eval_windows.h"
#include "model/llama.h"
#include "model/loss.h"

namespace longtune::eval {

struct PerplexityOptions {
  data::EvalMode mode = data::EvalMode::kSlidingWindow;
  int64_t window = 2048;
  int64_t stride = 256;
  int64_t batch = 1;            // windows per forward pass
  data::DocumentSelection documents;  // which documents, and how much of each
  int64_t bos_id = 1;
  int64_t loss_chunk_rows = model::kLossChunkRows;  // positions per chunk of the fused head + loss
  bool lockstep = false;        // every rank runs as many forward passes as the busiest one
  bool progress = true;
};

// Sums over the windows one rank scored; adding the partials of disjoint document sets gives the
// partial of their union (the fields are what an all-reduce of kSum carries).
struct PerplexityPartial {
  double window_nll_sum = 0;  // sum over windows of the window's mean NLL (nats)
  double windows = 0;         // windows scored
  double token_nll_sum = 0;   // sum of the NLL of every scored token (nats)
  double tokens = 0;          // tokens scored
  double documents = 0;       // documents scored

  PerplexityPartial& operator+=(const PerplexityPartial& other);
  // The fields in one vector, so ranks sum them in one collective, and back.
  std::vector<double> sums() const;
  static PerplexityPartial from_sums(const std::vector<double>& sums);
};

struct PerplexityResult {
  double ppl = 0;                // exp(mean of per-window mean NLL): the paper's figure
  double mean_window_nll = 0;
  double token_nll = 0;          // NLL averaged over every scored token
  double token_ppl = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  int64_t documents = 0;
  double seconds = 0;            // wall time of this process's share (0 from finalize_perplexity)
};

// This rank's share of the windows of the selected documents: the costliest window
// first, each to the least loaded rank (the same split on every rank). Runs in
// no-grad eval mode on the model's device and dtype (logits upcast to fp32 for the loss). A rank
// with no windows returns zeros. Throws longtune::Error on bad options or rank/world, or when no
// document is selected.
PerplexityPartial evaluate_perplexity_partial(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                              const PerplexityOptions& options, int rank, int world);

// The result from the partials summed over all ranks. Throws longtune::Error if nothing was scored.
PerplexityResult finalize_perplexity(const PerplexityPartial& total);

// Single process: finalize_perplexity(evaluate_perplexity_partial(..., 0, 1)) with its wall time.
PerplexityResult evaluate_perplexity(model::LlamaImpl& model, const data::TokenDocuments& documents,
                                     const PerplexityOptions& options);

}  // namespace longtune::eval
