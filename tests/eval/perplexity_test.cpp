// eval/perplexity: the rank split. Partial sums over world = 1, 2, 3 ranks add up to the
// single-process result; finalize_perplexity's arithmetic; bad rank/world arguments.
#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tests/test_support.h"

namespace longtune::eval {
namespace {

using testing::expect_error;

// Seven documents of different lengths (one empty), tokens from a fixed generator.
data::InMemoryDocuments make_documents() {
  std::vector<std::vector<int64_t>> docs;
  uint64_t state = 12345;
  for (int64_t len : {40, 7, 0, 95, 33, 61, 18}) {
    std::vector<int64_t> doc;
    for (int64_t i = 0; i < len; ++i) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      doc.push_back(static_cast<int64_t>(3 + (state >> 33) % 500));
    }
    docs.push_back(doc);
  }
  return data::InMemoryDocuments(docs);
}

model::Llama make_model() {
  at::manual_seed(7);
  model::Llama m(model::model_preset("tiny-gqa"));
  m->init_weights(0.1);
  return m;
}

PerplexityOptions options(int64_t batch) {
  PerplexityOptions o;
  o.window = 24;
  o.stride = 8;
  o.batch = batch;
  o.progress = false;
  return o;
}

TEST(Perplexity, PartialsOverRanksCombineToTheSingleProcessResult) {
  model::Llama m = make_model();
  const data::InMemoryDocuments docs = make_documents();
  for (int64_t batch : {1, 4}) {
    const PerplexityResult single = evaluate_perplexity(*m, docs, options(batch));
    EXPECT_EQ(single.documents, 6);  // the empty document is not scored
    EXPECT_EQ(single.scored_tokens, 40 + 7 + 95 + 33 + 61 + 18);
    for (int world : {1, 2, 3}) {
      PerplexityPartial total;
      double documents = 0;
      for (int rank = 0; rank < world; ++rank) {
        const PerplexityPartial part = evaluate_perplexity_partial(*m, docs, options(batch), rank, world);
        documents += part.documents;
        total += part;
      }
      const PerplexityResult combined = finalize_perplexity(total);
      EXPECT_EQ(documents, 6);
      EXPECT_EQ(combined.windows, single.windows) << "world " << world;
      EXPECT_EQ(combined.scored_tokens, single.scored_tokens) << "world " << world;
      // Only the order of the double sums (and, with batch 4, of the batched matmuls) differs.
      EXPECT_NEAR(combined.ppl, single.ppl, 1e-6 * single.ppl) << "world " << world << " batch " << batch;
      EXPECT_NEAR(combined.token_ppl, single.token_ppl, 1e-6 * single.token_ppl) << "world " << world;
      if (batch == 1) {
        EXPECT_NEAR(combined.mean_window_nll, single.mean_window_nll, 1e-12);
      }
    }
  }
}

TEST(Perplexity, RankWithoutDocumentsReturnsZeros) {
  model::Llama m = make_model();
  const data::InMemoryDocuments docs(std::vector<std::vector<int64_t>>{{5, 6, 7, 8}});
  const PerplexityPartial part = evaluate_perplexity_partial(*m, docs, options(1), /*rank=*/1, /*world=*/2);
  EXPECT_EQ(part.windows, 0);
  EXPECT_EQ(part.tokens, 0);
  EXPECT_EQ(part.documents, 0);
}

TEST(Perplexity, FinalizeIsTheMeanOfWindowMeansAndTheTokenMean) {
  PerplexityPartial p;
  p.window_nll_sum = 2.0 + 4.0;  // two windows with mean NLL 2 and 4
  p.windows = 2;
  p.token_nll_sum = 2.0 * 10 + 4.0 * 30;  // of 10 and 30 tokens
  p.tokens = 40;
  p.documents = 1;
  const PerplexityResult r = finalize_perplexity(p);
  EXPECT_DOUBLE_EQ(r.mean_window_nll, 3.0);
  EXPECT_DOUBLE_EQ(r.ppl, std::exp(3.0));
  EXPECT_DOUBLE_EQ(r.token_nll, 3.5);
  EXPECT_DOUBLE_EQ(r.token_ppl, std::exp(3.5));
  EXPECT_EQ(r.windows, 2);
  EXPECT_EQ(r.scored_tokens, 40);
  expect_error([] { finalize_perplexity(PerplexityPartial{}); }, {"no evaluation windows"});
}

TEST(Perplexity, RejectsBadRankAndWorld) {
  model::Llama m = make_model();
  const data::InMemoryDocuments docs = make_documents();
  expect_error([&] { evaluate_perplexity_partial(*m, docs, options(1), 2, 2); }, {"rank 2", "world 2"});
  expect_error([&] { evaluate_perplexity_partial(*m, docs, options(1), 0, 0); }, {"rank 0"});
  expect_error([&] { evaluate_perplexity_partial(*m, docs, options(1), -1, 3); }, {"rank -1"});
}

}  // namespace
}  // namespace longtune::eval
