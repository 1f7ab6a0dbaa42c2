// eval/passkey: the distance grid, the k_max rule, seeded keys, and a whole evaluation on a tiny
// random model (prompts of the requested length, keys at the requested distances, reproducible),
// and the same evaluation split over Gloo ranks, whole or sharded in lockstep, equal to one process.
#include "eval/passkey.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <set>

#include "dist/fsdp.h"
#include "dist/training_parameters.h"
#include "eval/passkey_prompt.h"
#include "model/weight_source.h"
#include "tests/dist_support.h"
#include "tests/test_support.h"

namespace longtune::eval {
namespace {

TEST(Passkey, DistanceGridIsEvenOverZeroToLength) {
  const std::vector<int64_t> grid = passkey_distances(8192, 32);
  ASSERT_EQ(grid.size(), 32u);
  for (size_t j = 0; j < grid.size(); ++j) EXPECT_EQ(grid[j], 256 * static_cast<int64_t>(j + 1));
  EXPECT_EQ(passkey_distances(512, 32).front(), 16);
  EXPECT_EQ(passkey_distances(100, 3), (std::vector<int64_t>{33, 67, 100}));
  EXPECT_EQ(passkey_distances(5, 5), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  testing::expect_error([] { passkey_distances(10, 0); }, {"number of distances", "0"});
  testing::expect_error([] { passkey_distances(10, 11); }, {"number of distances", "11"});
}

TEST(Passkey, KMaxIsTheLargestKWithEveryShorterKAtThreshold) {
  const std::vector<int64_t> k = {256, 512, 768, 1024, 1280};
  EXPECT_EQ(passkey_k_max(k, {1.0, 1.0, 1.0, 1.0, 1.0}), 1280);
  EXPECT_EQ(passkey_k_max(k, {1.0, 0.2, 0.3, 0.1, 1.0}), 768);  // a later success does not count
  EXPECT_EQ(passkey_k_max(k, {0.1, 1.0, 1.0, 1.0, 1.0}), 0);
  EXPECT_EQ(passkey_k_max(k, {0.2, 0.2, 0.2, 0.2, 0.2}), 1280);  // 20% counts
  EXPECT_EQ(passkey_k_max(k, {0.5, 0.19, 1.0, 1.0, 1.0}), 256);
  EXPECT_EQ(passkey_k_max(k, {0.5, 0.4, 0.0, 1.0, 1.0}, 0.5), 256);
  testing::expect_error([&] { passkey_k_max(k, {1.0}); }, {"5 distances", "1 accuracies"});
  testing::expect_error([] { passkey_k_max({2, 1}, {1.0, 1.0}); }, {"ascend"});
}

TEST(Passkey, DigitAccuracyComparesPositions) {
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, 12345), 1.0);
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, 12395), 0.8);
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, 54321), 0.2);  // the middle 3
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, 123), 0.6);     // a shorter answer: its digits only
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, 1234567), 1.0);  // right digits, yet no success
  EXPECT_DOUBLE_EQ(passkey_digit_accuracy(12345, std::nullopt), 0.0);
}

TEST(Passkey, KeysAreSeededFiveDigitNumbers) {
  std::set<int64_t> keys;
  for (int64_t g = 0; g < 32; ++g)
    for (int64_t t = 0; t < 10; ++t) {
      const int64_t key = passkey_key(0, g, t, 5);
      EXPECT_GE(key, 10000);
      EXPECT_LE(key, 99999);
      EXPECT_EQ(key, passkey_key(0, g, t, 5));
      keys.insert(key);
    }
  EXPECT_GT(keys.size(), 300u);  // 320 draws from 90000 values: almost all distinct
  EXPECT_NE(passkey_key(0, 0, 0, 5), passkey_key(1, 0, 0, 5));
  const int64_t one_digit = passkey_key(3, 1, 2, 1);
  EXPECT_TRUE(one_digit >= 1 && one_digit <= 9) << one_digit;
  testing::expect_error([] { passkey_key(0, 0, 0, 0); }, {"key digits"});
}

// A SentencePiece tokenizer trained on passkey prompts, in `dir`.
data::Tokenizer passkey_tokenizer(testing::TempDir& dir) {
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += passkey_prompt_text(static_cast<size_t>(i * 29), static_cast<size_t>(i * 13), 10000 + i * 2011) + " " +
            std::to_string(10000 + i * 2011) + ".\n";
  dir.write("corpus/train/1.txt", text);
  data::TokenizerTrainOptions topt;
  topt.inputs = {dir.path() / "corpus"};
  topt.vocab_size = 400;
  topt.output_prefix = dir.path() / "tok";
  data::train_tokenizer(topt);
  return data::Tokenizer(dir.path() / "tok.model");
}

PasskeyOptions small_options(int64_t length, int64_t distances, int64_t trials, int64_t max_new_tokens) {
  PasskeyOptions options;
  options.length = length;
  options.num_distances = distances;
  options.trials = trials;
  options.max_new_tokens = max_new_tokens;
  options.progress = false;
  return options;
}

TEST(Passkey, EvaluatesATinyModelReproducibly) {
  testing::TempDir dir;
  const data::Tokenizer tokenizer = passkey_tokenizer(dir);
  at::manual_seed(0);
  model::Llama m(model::model_preset("tiny"));
  PasskeyOptions options = small_options(120, 4, 2, 3);
  const PasskeyResult a = evaluate_passkey(*m, tokenizer, options);
  ASSERT_EQ(a.distances.size(), 4u);
  ASSERT_EQ(a.trials.size(), 8u);
  EXPECT_EQ(a.length, 120);
  for (const auto& t : a.trials) {
    EXPECT_LE(t.prompt_tokens, 120);
    EXPECT_GE(t.prompt_tokens, 110);  // filled to the length (a filler token is a few characters)
    EXPECT_LE(t.generated.size(), 3u);
    EXPECT_EQ(t.success, parse_passkey_answer(t.output) == t.key);
    EXPECT_EQ(t.digit_accuracy, passkey_digit_accuracy(t.key, parse_passkey_answer(t.output)));
    if (t.target_distance >= 60) {
      EXPECT_LE(t.distance, t.target_distance);
    }
  }
  std::vector<double> acc;
  for (const auto& d : a.distances) acc.push_back(d.accuracy);
  EXPECT_EQ(a.k_max, passkey_k_max(passkey_distances(120, 4), acc));
  const PasskeyResult b = evaluate_passkey(*m, tokenizer, options);
  for (size_t i = 0; i < a.trials.size(); ++i) {
    EXPECT_EQ(a.trials[i].key, b.trials[i].key);
    EXPECT_EQ(a.trials[i].generated, b.trials[i].generated);
    EXPECT_EQ(a.trials[i].prefix_chars, b.trials[i].prefix_chars);
  }
  options.seed = 1;
  EXPECT_NE(evaluate_passkey(*m, tokenizer, options).trials[0].key, a.trials[0].key);
}

TEST(Passkey, RanksWholeOrShardedInLockstepEqualOneProcess) {
  testing::TempDir dir;
  const data::Tokenizer tokenizer = passkey_tokenizer(dir);
  at::manual_seed(1);
  model::Llama reference(model::model_preset("tiny"));
  const PasskeyOptions options = small_options(100, 3, 3, 4);  // 9 trials: uneven over 2 and 4 ranks
  const PasskeyResult single = evaluate_passkey(*reference, tokenizer, options);
  for (bool sharded : {false, true}) {
    for (int world : {2, 4}) {
      std::vector<PasskeyResult> results(world);
      dist::run_ranks(world, [&](int rank, dist::ProcessGroup& group) {
        model::Llama hollow(reference->config(), model::ParameterOptions{model::ParameterInit::kHollow, at::kFloat});
        std::unique_ptr<dist::ShardedParameters> sharding;
        if (sharded) {
          sharding = std::make_unique<dist::ShardedParameters>(*hollow, dist::MixedPrecision{at::kFloat, at::kFloat},
                                                               dist::ShardingStrategy::kFullShard, group,
                                                               c10::Device(c10::kCPU));
          dist::load_weights(*sharding, model::ModuleWeights(*reference));
        }
        PasskeyOptions o = options;
        o.lockstep = sharded;
        // Each rank's answers through the group, as the CLI shares them.
        const ShareGenerated share = [&group](const std::vector<std::vector<int64_t>>& mine) {
          std::string flat;
          for (const auto& answer : mine) {
            for (int64_t id : answer) flat += std::to_string(id) + " ";
            flat += ";";
          }
          std::vector<std::vector<std::vector<int64_t>>> all;
          for (const std::string& text : group.all_gather_strings("passkey_test", flat)) {
            std::vector<std::vector<int64_t>> answers(1);
            std::string number;
            for (char c : text) {
              if (c == ';') answers.emplace_back();
              else if (c == ' ') answers.back().push_back(std::stoll(number)), number.clear();
              else number += c;
            }
            answers.pop_back();
            all.push_back(answers);
          }
          return all;
        };
        results[rank] = evaluate_passkey(sharded ? *hollow : *reference, tokenizer, o, rank, world, share);
      });
      for (int rank = 0; rank < world; ++rank) {
        SCOPED_TRACE(::testing::Message() << (sharded ? "sharded" : "whole") << " world " << world << " rank " << rank);
        ASSERT_EQ(results[rank].trials.size(), single.trials.size());
        for (size_t i = 0; i < single.trials.size(); ++i) {
          EXPECT_EQ(results[rank].trials[i].generated, single.trials[i].generated) << "trial " << i;
          EXPECT_EQ(results[rank].trials[i].key, single.trials[i].key);
        }
        EXPECT_EQ(results[rank].k_max, single.k_max);
        EXPECT_EQ(results[rank].mean_accuracy, single.mean_accuracy);
      }
    }
  }
}

}  // namespace
}  // namespace longtune::eval
