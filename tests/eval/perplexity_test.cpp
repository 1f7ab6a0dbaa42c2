// eval/perplexity: the rank split. Partial sums over world = 1, 2, 3 ranks add up to the
// single-process result, with a whole model per rank and with the model sharded full_shard over
// Gloo ranks in lockstep (greedy decoding with the KV cache too); windows are split by cost;
// finalize_perplexity's arithmetic; bad rank/world arguments.
#include "eval/perplexity.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "dist/fsdp.h"
#include "dist/training_parameters.h"
#include "eval/greedy_decode.h"
#include "model/weight_source.h"
#include "tests/dist_support.h"
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

// Every rank holds 1/world of the model; the ranks' windows differ, yet every forward gathers
// every unit together. The all-reduced partials equal one process with the whole model.
TEST(Perplexity, ShardedModelInLockstepEqualsTheSingleProcessResult) {
  model::Llama reference = make_model();
  const data::InMemoryDocuments docs = make_documents();
  const PerplexityResult single = evaluate_perplexity(*reference, docs, options(2));
  const std::vector<int64_t> prompt = {1, 17, 29, 301, 44, 5};
  const GreedyOutput decoded = greedy_decode(*reference, prompt, 6);
  for (int world : {2, 3, 8}) {  // 8 ranks: more ranks than some documents have windows
    std::vector<PerplexityPartial> parts(world);
    std::vector<std::vector<int64_t>> generated(world);
    dist::run_ranks(world, [&](int rank, dist::ProcessGroup& group) {
      model::Llama hollow(reference->config(), model::ParameterOptions{model::ParameterInit::kHollow, at::kFloat});
      dist::ShardedParameters sharded(*hollow, {at::kFloat, at::kFloat}, dist::ShardingStrategy::kFullShard, group,
                                      c10::Device(c10::kCPU));
      dist::load_weights(sharded, model::ModuleWeights(*reference));
      PerplexityOptions o = options(2);
      o.lockstep = true;
      parts[rank] = evaluate_perplexity_partial(*hollow, docs, o, rank, world);
      generated[rank] = greedy_decode(*hollow, prompt, 6).tokens;
    });
    PerplexityPartial total;
    for (const PerplexityPartial& part : parts) total += part;
    const PerplexityResult combined = finalize_perplexity(total);
    EXPECT_EQ(combined.windows, single.windows) << "world " << world;
    EXPECT_EQ(combined.documents, single.documents) << "world " << world;
    EXPECT_NEAR(combined.ppl, single.ppl, 1e-6 * single.ppl) << "world " << world;
    EXPECT_NEAR(combined.token_ppl, single.token_ppl, 1e-6 * single.token_ppl) << "world " << world;
    for (int rank = 0; rank < world; ++rank) EXPECT_EQ(generated[rank], decoded.tokens) << "rank " << rank;
  }
}

// The split is by cost, not by document: one long document's windows spread over every rank.
TEST(Perplexity, WindowsOfOneLongDocumentAreSpreadOverTheRanks) {
  model::Llama m = make_model();
  const data::InMemoryDocuments docs(std::vector<std::vector<int64_t>>{std::vector<int64_t>(200, 9), {4, 5, 6}});
  PerplexityPartial total;
  for (int rank = 0; rank < 3; ++rank) {
    const PerplexityPartial part = evaluate_perplexity_partial(*m, docs, options(1), rank, 3);
    EXPECT_GE(part.windows, 7) << "rank " << rank;  // 23 windows of the long document, about 8 each
    total += part;
  }
  EXPECT_EQ(total.documents, 2);
  EXPECT_EQ(total.tokens, 203);
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
