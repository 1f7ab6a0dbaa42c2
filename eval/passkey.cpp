#include "eval/passkey.h"

#include <fmt/format.h>

#include <chrono>
#include <optional>
#include <utility>
#include <cmath>
#include <random>

#include "common/check.h"
#include "common/progress.h"
#include "eval/greedy_decode.h"
#include "eval/passkey_prompt.h"

namespace longtune::eval {

std::vector<int64_t> passkey_distances(int64_t length, int64_t count) {
  LT_CHECK(count >= 1 && count <= length, "passkey: the number of distances must be in [1, length {}], got {}",
           length, count);
  std::vector<int64_t> out;
  for (int64_t j = 1; j <= count; ++j)
    out.push_back(std::llround(static_cast<double>(j) * static_cast<double>(length) / static_cast<double>(count)));
  return out;
}

int64_t passkey_key(uint64_t seed, int64_t grid_index, int64_t trial, int64_t digits) {
  LT_CHECK(digits >= 1 && digits <= 18, "passkey: key digits must be in [1, 18], got {}", digits);
  // seed_seq and mt19937_64 are fully specified by the standard: the same key everywhere.
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(grid_index), static_cast<uint32_t>(trial)};
  std::mt19937_64 rng(seq);
  int64_t low = 1;
  for (int64_t i = 1; i < digits; ++i) low *= 10;
  const auto span = static_cast<uint64_t>(low * 10 - low);  // keys in [low, 10 * low - 1]
  return low + static_cast<int64_t>(rng() % span);
}

int64_t passkey_k_max(const std::vector<int64_t>& distances, const std::vector<double>& accuracy, double threshold) {
  LT_CHECK(distances.size() == accuracy.size(), "passkey k_max: {} distances but {} accuracies", distances.size(),
           accuracy.size());
  int64_t k_max = 0;
  for (size_t i = 0; i < distances.size(); ++i) {
    LT_CHECK(i == 0 || distances[i] > distances[i - 1], "passkey k_max: distances must ascend");
    if (accuracy[i] + 1e-12 < threshold) break;
    k_max = distances[i];
  }
  return k_max;
}

double passkey_digit_accuracy(int64_t key, const std::optional<int64_t>& answer) {
  const std::string expected = std::to_string(key);
  if (!answer) return 0;
  const std::string got = std::to_string(*answer);
  int64_t right = 0;
  for (size_t i = 0; i < expected.size() && i < got.size(); ++i) right += expected[i] == got[i] ? 1 : 0;
  return static_cast<double>(right) / static_cast<double>(expected.size());
}

PasskeyResult evaluate_passkey(model::LlamaImpl& model, const data::Tokenizer& tokenizer,
                               const PasskeyOptions& options, int rank, int world, const ShareGenerated& share) {
  const auto start = std::chrono::steady_clock::now();
  PasskeyResult result;
  result.length = options.length > 0 ? options.length : model.config().max_position_embeddings;
  LT_CHECK(options.trials >= 1, "passkey: trials must be >= 1, got {}", options.trials);
  LT_CHECK(options.max_new_tokens >= 1, "passkey: max_new_tokens must be >= 1, got {}", options.max_new_tokens);
  LT_CHECK(world >= 1 && rank >= 0 && rank < world, "passkey: rank {} is not in [0, world {})", rank, world);
  LT_CHECK(world == 1 || share, "passkey: {} ranks need a way to share their answers", world);
  LT_CHECK(tokenizer.vocab_size() <= model.config().vocab_size,
           "passkey: the tokenizer {} has {} pieces, more than the model's vocabulary of {}",
           tokenizer.path().string(), tokenizer.vocab_size(), model.config().vocab_size);
  const std::vector<int64_t> grid = passkey_distances(result.length, options.num_distances);

  // Every rank builds every prompt (each fitted from the previous one at its distance, so the
  // prompts do not depend on the split), then decodes trials i with i % world == rank.
  std::vector<PasskeyTrial> trials;
  std::vector<std::vector<int64_t>> prompts;
  for (size_t g = 0; g < grid.size(); ++g) {
    std::optional<PasskeyPrompt> previous;  // the filler lengths of the last key at this distance
    for (int64_t t = 0; t < options.trials; ++t) {
      PasskeyTrial trial;
      trial.target_distance = grid[g];
      trial.key = passkey_key(options.seed, static_cast<int64_t>(g), t, options.key_digits);
      const PasskeyPrompt prompt = fit_passkey_prompt(tokenizer, tokenizer.bos_id(), trial.key, result.length,
                                                      grid[g], previous ? &*previous : nullptr);
      trial.distance = prompt.distance();
      trial.prefix_chars = prompt.prefix_chars;
      trial.suffix_chars = prompt.suffix_chars;
      trial.prompt_tokens = static_cast<int64_t>(prompt.ids.size());
      prompts.push_back(prompt.ids);
      previous = prompt;
      trials.push_back(std::move(trial));
    }
  }
  const size_t total = trials.size(), ranks = static_cast<size_t>(world), me = static_cast<size_t>(rank);
  // A sharded model's forwards are collective: every rank decodes as many trials as rank 0, each for
  // exactly max_new_tokens steps.
  const size_t mine = (total + ranks - 1 - me) / ranks, most = (total + ranks - 1) / ranks;
  const size_t decodes = options.lockstep ? most : mine;
  std::vector<std::vector<int64_t>> generated;
  ProgressLine progress(options.progress);
  for (size_t n = 0; n < decodes; ++n) {
    const size_t i = n * ranks + me;
    if (n >= mine) {
      greedy_decode(model, {tokenizer.bos_id()}, options.max_new_tokens, -1);  // a placeholder
      continue;
    }
    generated.push_back(
        greedy_decode(model, prompts[i], options.max_new_tokens, tokenizer.eos_id(), options.lockstep).tokens);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.update(fmt::format("passkey {} {}/{} on this rank | k={} | ETA {}",
                                ProgressLine::bar(static_cast<double>(n + 1) / mine), n + 1, mine,
                                trials[i].target_distance,
                                ProgressLine::duration(elapsed / (n + 1) * (mine - n - 1))));
  }
  progress.finish();
  const std::vector<std::vector<std::vector<int64_t>>> by_rank =
      world == 1 ? std::vector<std::vector<std::vector<int64_t>>>{generated} : share(generated);
  LT_CHECK(by_rank.size() == ranks, "passkey: answers from {} ranks, expected {}", by_rank.size(), world);
  for (size_t i = 0; i < total; ++i) {
    const auto& from = by_rank[i % ranks];
    LT_CHECK(i / ranks < from.size(), "passkey: rank {} sent {} answers, fewer than its trials", i % ranks,
             from.size());
    trials[i].generated = from[i / ranks];
  }

  std::vector<double> accuracy;
  for (size_t g = 0; g < grid.size(); ++g) {
    PasskeyDistance at_k{grid[g], 0, 0, options.trials, 0, 0};
    for (int64_t t = 0; t < options.trials; ++t) {
      PasskeyTrial& trial = trials[g * static_cast<size_t>(options.trials) + static_cast<size_t>(t)];
      // A model's vocabulary may be padded past the tokenizer's: such an id has no text (as HF's
      // fast tokenizers decode it), so it only makes the answer wrong.
      std::vector<int32_t> text_ids;
      for (int64_t id : trial.generated)
        if (id != tokenizer.eos_id() && id < tokenizer.vocab_size()) text_ids.push_back(static_cast<int32_t>(id));
      trial.output = tokenizer.decode(text_ids);
      const std::optional<int64_t> answer = parse_passkey_answer(trial.output);
      trial.success = answer.has_value() && *answer == trial.key;
      trial.digit_accuracy = passkey_digit_accuracy(trial.key, answer);
      at_k.digit_accuracy += trial.digit_accuracy / static_cast<double>(options.trials);
      at_k.successes += trial.success ? 1 : 0;
      at_k.mean_distance += static_cast<double>(trial.distance) / static_cast<double>(options.trials);
    }
    at_k.accuracy = static_cast<double>(at_k.successes) / static_cast<double>(at_k.trials);
    accuracy.push_back(at_k.accuracy);
    result.mean_accuracy += at_k.accuracy / static_cast<double>(grid.size());
    result.mean_digit_accuracy += at_k.digit_accuracy / static_cast<double>(grid.size());
    result.distances.push_back(at_k);
  }
  result.trials = std::move(trials);
  result.k_max = passkey_k_max(grid, accuracy, options.threshold);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace longtune::eval
