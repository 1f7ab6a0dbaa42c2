// Evaluation reads over whole documents (books), never packed across them.
// Sliding window (the PI paper's protocol, following Press et al. and jquesnelle/yarn's
// eval/perplexity.py compute_perplexity): for window W and stride S, begin = 0, S, 2S, ...;
// end = min(begin + W - 1, doc_len); the model sees BOS + doc[begin:end] (at most W tokens) and
// only the last end - prev_end doc tokens are scored (the first window scores all of its tokens);
// the loop stops after the window whose end reaches doc_len. PPL = exp(mean over all windows of all
// documents of each window's mean NLL). Chunks: doc split into consecutive pieces of W - 1 tokens,
// each with BOS prepended, every token scored. Not the model or the loss (that is eval's job).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "data/documents.h"

namespace longtune::data {

struct EvalWindow {
  uint64_t doc = 0;
  uint64_t begin = 0;   // first document token in the window
  uint64_t end = 0;     // one past the last document token
  uint64_t scored = 0;  // the last `scored` document tokens are targets (1 <= scored <= end - begin)
};

enum class EvalMode { kSlidingWindow, kChunks };

// The windows of one document of `doc_len` tokens (none if doc_len == 0). window >= 2; for the
// sliding window 1 <= stride <= window - 1. Throws longtune::Error on bad arguments.
std::vector<EvalWindow> sliding_windows(uint64_t doc, uint64_t doc_len, int64_t window, int64_t stride);
std::vector<EvalWindow> chunk_windows(uint64_t doc, uint64_t doc_len, int64_t window);

// Which documents are scored and how much of each: the Proof-pile protocol of the PI paper is
// {min_tokens = 32768, truncate_tokens = 32768} (documents of at least 32k tokens, their first 32k).
struct DocumentSelection {
  uint64_t max_documents = 0;    // the first N documents that qualify (0: all)
  uint64_t min_tokens = 0;       // only documents holding at least this many tokens
  uint64_t truncate_tokens = 0;  // read each up to its first N tokens (0: whole)
};

// The document indices `selection` keeps, in order, and the length each is read to.
std::vector<std::pair<uint64_t, uint64_t>> select_documents(const TokenDocuments& documents,
                                                             const DocumentSelection& selection);

// All windows of the selected documents, in order. Throws longtune::Error if none is selected.
std::vector<EvalWindow> plan_eval_windows(const TokenDocuments& documents, EvalMode mode, int64_t window,
                                          int64_t stride, const DocumentSelection& selection = {});

// The model input of a window, BOS followed by doc[begin:end] (length end - begin + 1), and labels
// in HF's unshifted convention: same length, labels[i] = input_ids[i] where token i is scored and
// -100 elsewhere (always at BOS); the loss shifts them as LlamaForCausalLM does.
struct WindowTokens {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
};
WindowTokens read_window(const TokenDocuments& documents, const EvalWindow& window, int64_t bos_id);

}  // namespace longtune::data
