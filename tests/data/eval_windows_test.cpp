// Unit tests for data/eval_windows: hand-computed windows, a line-by-line transcription of
// jquesnelle/yarn's compute_perplexity loop (Python slicing semantics included) compared over many
// (length, window, stride) combinations, exact once-only scoring of every document token, and the
// tokens and labels read_window builds.
#include "data/eval_windows.h"

#include <gtest/gtest.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/check.h"
#include "tests/test_support.h"

namespace longtune::data {
namespace {

using longtune::testing::expect_error;

constexpr int64_t kBos = 1;

struct Expected {
  uint64_t begin, end, scored;
};

void expect_windows(const std::vector<EvalWindow>& got, uint64_t doc,
                    const std::vector<Expected>& expected) {
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].doc, doc) << i;
    EXPECT_EQ(got[i].begin, expected[i].begin) << i;
    EXPECT_EQ(got[i].end, expected[i].end) << i;
    EXPECT_EQ(got[i].scored, expected[i].scored) << i;
  }
}

// A document whose token at position i is 100 + i.
std::vector<int64_t> doc_of_length(uint64_t n, int64_t first = 100) {
  std::vector<int64_t> d(n);
  for (uint64_t i = 0; i < n; ++i) d[i] = first + static_cast<int64_t>(i);
  return d;
}

TEST(EvalWindowsTest, HandComputedSlidingWindows) {
  // W = 5 holds BOS + 4 document tokens.
  expect_windows(sliding_windows(0, 10, 5, 3), 0, {{0, 4, 4}, {3, 7, 3}, {6, 10, 3}});
  expect_windows(sliding_windows(2, 10, 5, 4), 2, {{0, 4, 4}, {4, 8, 4}, {8, 10, 2}});
  expect_windows(sliding_windows(0, 10, 5, 2), 0, {{0, 4, 4}, {2, 6, 2}, {4, 8, 2}, {6, 10, 2}});
  expect_windows(sliding_windows(0, 11, 5, 2), 0,
                 {{0, 4, 4}, {2, 6, 2}, {4, 8, 2}, {6, 10, 2}, {8, 11, 1}});
  expect_windows(sliding_windows(0, 6, 3, 1), 0,
                 {{0, 2, 2}, {1, 3, 1}, {2, 4, 1}, {3, 5, 1}, {4, 6, 1}});
  expect_windows(sliding_windows(0, 3, 10, 4), 0, {{0, 3, 3}});
  expect_windows(sliding_windows(0, 1, 2, 1), 0, {{0, 1, 1}});
  expect_windows(sliding_windows(0, 4, 5, 1), 0, {{0, 4, 4}});  // fits in one window: no more
  EXPECT_TRUE(sliding_windows(0, 0, 5, 2).empty());
}

TEST(EvalWindowsTest, HandComputedChunks) {
  expect_windows(chunk_windows(1, 10, 5), 1, {{0, 4, 4}, {4, 8, 4}, {8, 10, 2}});
  expect_windows(chunk_windows(0, 8, 5), 0, {{0, 4, 4}, {4, 8, 4}});
  expect_windows(chunk_windows(0, 1, 2), 0, {{0, 1, 1}});
  EXPECT_TRUE(chunk_windows(0, 0, 5).empty());
}

TEST(EvalWindowsTest, BadArgumentsThrow) {
  expect_error([] { sliding_windows(0, 10, 1, 1); }, {"window", "1"});
  expect_error([] { sliding_windows(0, 10, 5, 0); }, {"stride", "[1, 4]", "0"});
  expect_error([] { sliding_windows(0, 10, 5, 5); }, {"stride", "[1, 4]", "5"});
  expect_error([] { sliding_windows(0, 10, 5, -1); }, {"stride"});
  expect_error([] { chunk_windows(0, 10, 1); }, {"window"});
  InMemoryDocuments docs({{1, 2, 3}});
  expect_error([&] { plan_eval_windows(docs, EvalMode::kSlidingWindow, 4, 4); }, {"stride"});
  // For chunks the stride is not used.
  EXPECT_EQ(plan_eval_windows(docs, EvalMode::kChunks, 3, 0).size(), 2u);
}

// compute_perplexity's loop for one document, transcribed from Python with add_start_token:
// returns, per window, the input ids and the labels HF's model receives (target_ids).
std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> python_reference(
    const std::vector<int64_t>& doc, int64_t max_length, int64_t sliding_window) {
  std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> out;
  const int64_t max_tokenized_len = max_length - 1;
  const auto seq_len = static_cast<int64_t>(doc.size());
  int64_t prev_end_loc = 0;
  for (int64_t begin_loc = 0; begin_loc < seq_len; begin_loc += sliding_window) {
    const int64_t end_loc = std::min(begin_loc + max_tokenized_len, seq_len);
    const int64_t trg_len = end_loc - prev_end_loc;
    std::vector<int64_t> input_ids(doc.begin() + begin_loc, doc.begin() + end_loc);
    input_ids.insert(input_ids.begin(), kBos);
    std::vector<int64_t> target_ids = input_ids;
    // target_ids[:, :-trg_len] = -100 with Python's slice clamping (and :-0 meaning :0).
    const auto len = static_cast<int64_t>(target_ids.size());
    const int64_t stop = trg_len <= 0 ? 0 : std::max<int64_t>(len - trg_len, 0);
    for (int64_t i = 0; i < stop; ++i) target_ids[i] = -100;
    out.emplace_back(std::move(input_ids), std::move(target_ids));
    prev_end_loc = end_loc;
    if (end_loc == seq_len) break;
  }
  return out;
}

TEST(EvalWindowsTest, SlidingWindowsMatchThePythonLoopExactly) {
  int combos = 0;
  for (uint64_t len = 0; len <= 45; ++len) {
    InMemoryDocuments docs({doc_of_length(len)});
    const auto doc = doc_of_length(len);
    for (int64_t window = 2; window <= 13; ++window) {
      for (int64_t stride = 1; stride <= window - 1; ++stride) {
        ++combos;
        const auto windows = sliding_windows(0, len, window, stride);
        const auto reference = python_reference(doc, window, stride);
        ASSERT_EQ(windows.size(), reference.size())
            << "len " << len << " W " << window << " S " << stride;
        std::vector<int> times_scored(len, 0);
        for (size_t i = 0; i < windows.size(); ++i) {
          const WindowTokens tokens = read_window(docs, windows[i], kBos);
          ASSERT_EQ(tokens.input_ids, reference[i].first)
              << "len " << len << " W " << window << " S " << stride << " window " << i;
          ASSERT_EQ(tokens.labels, reference[i].second)
              << "len " << len << " W " << window << " S " << stride << " window " << i;
          ASSERT_LE(tokens.input_ids.size(), static_cast<size_t>(window));
          EXPECT_EQ(tokens.labels[0], -100);  // BOS is never a target
          for (uint64_t p = windows[i].end - windows[i].scored; p < windows[i].end; ++p)
            ++times_scored[p];
        }
        for (uint64_t p = 0; p < len; ++p)
          ASSERT_EQ(times_scored[p], 1)
              << "len " << len << " W " << window << " S " << stride << " token " << p;
      }
    }
  }
  EXPECT_GT(combos, 3000);
}

TEST(EvalWindowsTest, ChunksScoreEveryTokenOnceWithAFullWindowOfContextAtMost) {
  for (uint64_t len = 0; len <= 60; ++len) {
    for (int64_t window = 2; window <= 17; ++window) {
      const auto windows = chunk_windows(3, len, window);
      uint64_t expected_begin = 0;
      for (const auto& w : windows) {
        EXPECT_EQ(w.doc, 3u);
        EXPECT_EQ(w.begin, expected_begin);  // consecutive, no overlap, no gap
        EXPECT_EQ(w.scored, w.end - w.begin);
        EXPECT_LE(w.end - w.begin, static_cast<uint64_t>(window - 1));
        EXPECT_GE(w.end - w.begin, 1u);
        expected_begin = w.end;
      }
      EXPECT_EQ(expected_begin, len);
      EXPECT_EQ(windows.size(), (len + window - 2) / (window - 1));
    }
  }
}

TEST(EvalWindowsTest, PlanCoversDocumentsInOrder) {
  InMemoryDocuments docs({doc_of_length(10), {}, doc_of_length(3, 500), doc_of_length(9, 900)});
  const auto plan = plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3);
  // doc 0: 3 windows (see HandComputedSlidingWindows), doc 1: none, doc 2: 1, doc 3: 0-4, 3-7, 6-9.
  ASSERT_EQ(plan.size(), 7u);
  const std::vector<uint64_t> doc_of = {0, 0, 0, 2, 3, 3, 3};
  for (size_t i = 0; i < plan.size(); ++i) EXPECT_EQ(plan[i].doc, doc_of[i]) << i;
  EXPECT_EQ(plan[6].begin, 6u);
  EXPECT_EQ(plan[6].end, 9u);
  EXPECT_EQ(plan[6].scored, 2u);

  // max_documents counts the documents selected (the empty one never is).
  EXPECT_EQ(plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3, {.max_documents = 1}).size(), 3u);
  EXPECT_EQ(plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3, {.max_documents = 2}).size(), 4u);
  EXPECT_EQ(plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3, {.max_documents = 100}).size(), 7u);
  const auto chunks = plan_eval_windows(docs, EvalMode::kChunks, 5, 0);
  ASSERT_EQ(chunks.size(), 3u + 1u + 3u);
  uint64_t scored = 0;
  for (const auto& w : chunks) scored += w.scored;
  EXPECT_EQ(scored, docs.total_tokens());
}

TEST(EvalWindowsTest, ReadWindowBuildsInputsAndLabels) {
  InMemoryDocuments docs({doc_of_length(10)});
  const WindowTokens t = read_window(docs, {0, 3, 7, 2}, kBos);
  EXPECT_EQ(t.input_ids, (std::vector<int64_t>{kBos, 103, 104, 105, 106}));
  EXPECT_EQ(t.labels, (std::vector<int64_t>{-100, -100, -100, 105, 106}));
  const WindowTokens all = read_window(docs, {0, 0, 4, 4}, kBos);
  EXPECT_EQ(all.labels, (std::vector<int64_t>{-100, 100, 101, 102, 103}));

  expect_error([&] { read_window(docs, {1, 0, 1, 1}, kBos); }, {"document 1 out of range"});
  expect_error([&] { read_window(docs, {0, 5, 11, 1}, kBos); }, {"not inside document 0"});
  expect_error([&] { read_window(docs, {0, 5, 5, 1}, kBos); }, {"not inside document 0"});
  expect_error([&] { read_window(docs, {0, 3, 7, 0}, kBos); }, {"scores 0 tokens"});
  expect_error([&] { read_window(docs, {0, 3, 7, 5}, kBos); }, {"scores 5 tokens"});
}


// The Proof-pile protocol: documents of at least N tokens, each read to its first M.
TEST(EvalWindowsTest, SelectionByLengthAndTruncation) {
  InMemoryDocuments docs({doc_of_length(10), {}, doc_of_length(3, 500), doc_of_length(9, 900)});
  using Selected = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(select_documents(docs, {}), (Selected{{0, 10}, {2, 3}, {3, 9}}));
  EXPECT_EQ(select_documents(docs, {.min_tokens = 5}), (Selected{{0, 10}, {3, 9}}));
  EXPECT_EQ(select_documents(docs, {.truncate_tokens = 6}), (Selected{{0, 6}, {2, 3}, {3, 6}}));
  EXPECT_EQ(select_documents(docs, {.max_documents = 1, .min_tokens = 9, .truncate_tokens = 4}), (Selected{{0, 4}}));
  EXPECT_EQ(select_documents(docs, {.max_documents = 1, .min_tokens = 10}), (Selected{{0, 10}}));

  // doc 0 and doc 3 read to 6 tokens: windows 0-4 and 3-6 each (scoring 4, then 2).
  const auto plan = plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3, {.min_tokens = 5, .truncate_tokens = 6});
  ASSERT_EQ(plan.size(), 4u);
  for (size_t i : {0u, 2u}) {
    EXPECT_EQ(plan[i].end, 4u);
    EXPECT_EQ(plan[i].scored, 4u);
    EXPECT_EQ(plan[i + 1].begin, 3u);
    EXPECT_EQ(plan[i + 1].end, 6u);
    EXPECT_EQ(plan[i + 1].scored, 2u);
  }
  EXPECT_EQ(plan[0].doc, 0u);
  EXPECT_EQ(plan[2].doc, 3u);
  // The window reads the truncated document only.
  const WindowTokens tokens = read_window(docs, plan[1], /*bos_id=*/1);
  EXPECT_EQ(tokens.input_ids.size(), 4u);
  expect_error([&] { plan_eval_windows(docs, EvalMode::kSlidingWindow, 5, 3, {.min_tokens = 11}); },
               {"no documents to evaluate", "at least 11"});
}

}  // namespace
}  // namespace longtune::data
