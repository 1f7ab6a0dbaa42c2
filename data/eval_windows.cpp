// Evaluation window planning: the sliding-window loop of jquesnelle/yarn's compute_perplexity
// (with add_start_token) transcribed exactly, and plain chunks. Only positions here; the model and
// the loss are eval's job.
#include "data/eval_windows.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/check.h"

namespace longtune::data {

std::vector<EvalWindow> sliding_windows(uint64_t doc, uint64_t doc_len, int64_t window,
                                        int64_t stride) {
  LT_CHECK(window >= 2, "evaluation window must be at least 2 tokens (BOS + 1), got {}", window);
  // A stride past window - 1 would leave tokens between windows that no window scores.
  LT_CHECK(stride >= 1 && stride <= window - 1,
           "sliding-window stride must be in [1, window - 1] = [1, {}], got {}", window - 1,
           stride);
  // One slot of the window is BOS, so a window holds at most window - 1 document tokens.
  const auto max_doc_tokens = static_cast<uint64_t>(window - 1);
  const auto step = static_cast<uint64_t>(stride);
  std::vector<EvalWindow> windows;
  uint64_t prev_end = 0;
  for (uint64_t begin = 0; begin < doc_len; begin += step) {
    const uint64_t end = std::min(begin + max_doc_tokens, doc_len);
    // Python masks input[:-trg_len]; with stride <= window - 1, prev_end >= begin, so the scored
    // tokens (end - prev_end of them) lie inside the window and never include BOS.
    windows.push_back({doc, begin, end, end - prev_end});
    prev_end = end;
    if (end == doc_len) break;
  }
  return windows;
}

std::vector<EvalWindow> chunk_windows(uint64_t doc, uint64_t doc_len, int64_t window) {
  LT_CHECK(window >= 2, "evaluation window must be at least 2 tokens (BOS + 1), got {}", window);
  const auto max_doc_tokens = static_cast<uint64_t>(window - 1);
  std::vector<EvalWindow> windows;
  for (uint64_t begin = 0; begin < doc_len; begin += max_doc_tokens) {
    const uint64_t end = std::min(begin + max_doc_tokens, doc_len);
    windows.push_back({doc, begin, end, end - begin});
  }
  return windows;
}

std::vector<std::pair<uint64_t, uint64_t>> select_documents(const TokenDocuments& documents,
                                                             const DocumentSelection& selection) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t doc = 0; doc < documents.num_documents(); ++doc) {
    if (selection.max_documents != 0 && out.size() >= selection.max_documents) break;
    uint64_t len = documents.document_length(doc);
    if (len == 0 || len < selection.min_tokens) continue;
    if (selection.truncate_tokens != 0) len = std::min(len, selection.truncate_tokens);
    out.emplace_back(doc, len);
  }
  return out;
}

std::vector<EvalWindow> plan_eval_windows(const TokenDocuments& documents, EvalMode mode, int64_t window,
                                          int64_t stride, const DocumentSelection& selection) {
  const auto selected = select_documents(documents, selection);
  LT_CHECK(!selected.empty(), "no documents to evaluate: none of the {} holds {} tokens{}", documents.num_documents(),
           selection.min_tokens > 0 ? fmt::format("at least {}", selection.min_tokens) : std::string("any"),
           selection.max_documents > 0 ? fmt::format(" (first {} asked for)", selection.max_documents) : std::string());
  std::vector<EvalWindow> all;
  for (const auto& [doc, len] : selected) {
    auto windows = mode == EvalMode::kSlidingWindow ? sliding_windows(doc, len, window, stride)
                                                    : chunk_windows(doc, len, window);
    all.insert(all.end(), windows.begin(), windows.end());
  }
  return all;
}

WindowTokens read_window(const TokenDocuments& documents, const EvalWindow& window,
                         int64_t bos_id) {
  LT_CHECK(window.doc < documents.num_documents(),
           "evaluation window: document {} out of range ({} documents)", window.doc,
           documents.num_documents());
  const uint64_t doc_len = documents.document_length(window.doc);
  LT_CHECK(window.begin < window.end && window.end <= doc_len,
           "evaluation window [{}, {}) is not inside document {} ({} tokens)", window.begin,
           window.end, window.doc, doc_len);
  const uint64_t n = window.end - window.begin;
  LT_CHECK(window.scored >= 1 && window.scored <= n,
           "evaluation window [{}, {}) of document {} scores {} tokens; must be 1..{}",
           window.begin, window.end, window.doc, window.scored, n);
  WindowTokens tokens;
  tokens.input_ids.resize(n + 1);
  tokens.input_ids[0] = bos_id;
  documents.copy_tokens(window.doc, window.begin, n, tokens.input_ids.data() + 1);
  tokens.labels.assign(n + 1, -100);
  const uint64_t first_scored = n + 1 - window.scored;
  std::copy(tokens.input_ids.begin() + static_cast<int64_t>(first_scored), tokens.input_ids.end(),
            tokens.labels.begin() + static_cast<int64_t>(first_scored));
  return tokens;
}

}  // namespace longtune::data
