// The PI paper's passkey-retrieval evaluation (§3.3, Table 4): for each of `num_distances` key
// distances k evenly spaced over (0, L'] (k_j = round(j·L'/n), j = 1..n: for L' = 8192, n = 32 the
// multiples of 256 the paper reports), `trials` prompts of L' tokens with a random 5-digit key k
// tokens from the end; greedy decoding of a few tokens with a KV cache; a trial succeeds when the
// first integer in the output is the key. k_max (the effective context) is the largest k such
// that every k' <= k succeeds at least 20% of the time. Seeded: the same options give the same
// keys and prompts. Not the prompt wording (eval/passkey_prompt.h) or the decoder.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "model/llama.h"

namespace longtune::eval {

struct PasskeyOptions {
  int64_t length = 0;           // L': prompt length in tokens incl. BOS (0: the model's window)
  int64_t num_distances = 32;   // grid points over (0, L']
  int64_t trials = 10;          // prompts per distance
  int64_t max_new_tokens = 10;  // greedy tokens generated per prompt
  int64_t key_digits = 5;       // keys are uniform over [10^(d-1), 10^d - 1]
  double threshold = 0.2;       // success rate that counts a distance as retrieved
  uint64_t seed = 0;
  bool progress = true;
  bool lockstep = false;        // every rank runs as many decodes, of max_new_tokens steps each
};

struct PasskeyTrial {
  int64_t target_distance = 0;  // k from the grid
  int64_t distance = 0;         // achieved: tokens from the key's first digit to the prompt's end
  int64_t key = 0;
  size_t prefix_chars = 0;
  size_t suffix_chars = 0;
  int64_t prompt_tokens = 0;
  std::vector<int64_t> generated;  // greedy ids (EOS included if produced)
  std::string output;              // decoded text of `generated` without EOS
  bool success = false;
  double digit_accuracy = 0;       // key digits the answer has right, position by position (a diagnostic)
};

struct PasskeyDistance {
  int64_t k = 0;
  double mean_distance = 0;  // achieved distances averaged over the trials
  int64_t successes = 0;
  int64_t trials = 0;
  double accuracy = 0;
  double digit_accuracy = 0;  // mean over the trials
};

struct PasskeyResult {
  int64_t length = 0;
  std::vector<PasskeyDistance> distances;
  std::vector<PasskeyTrial> trials;
  int64_t k_max = 0;  // 0: even the smallest k fails
  double mean_accuracy = 0;
  double mean_digit_accuracy = 0;
  double seconds = 0;
};

// k_j = round(j * length / count) for j = 1..count. Throws longtune::Error unless
// 1 <= count <= length.
std::vector<int64_t> passkey_distances(int64_t length, int64_t count);

// The key of trial `trial` at grid point `grid_index`: a pure function of the seed and indices.
int64_t passkey_key(uint64_t seed, int64_t grid_index, int64_t trial, int64_t digits);

// Largest k such that every k' <= k has accuracy >= threshold (the distances ascending, one
// accuracy per distance); 0 when the first fails. Throws on mismatched or unsorted input.
int64_t passkey_k_max(const std::vector<int64_t>& distances, const std::vector<double>& accuracy,
                      double threshold = 0.2);

// The fraction of `key`'s decimal digits that `answer` (the first integer of the output, if any)
// has at the same position: 1 for the key itself, about 0.1 for a random number of as many digits.
// Not the paper's metric: it shows partial retrieval where exact retrieval fails.
double passkey_digit_accuracy(int64_t key, const std::optional<int64_t>& answer);

// Takes this rank's generated ids of its trials (in order) and returns every rank's, in rank order.
using ShareGenerated =
    std::function<std::vector<std::vector<std::vector<int64_t>>>(const std::vector<std::vector<int64_t>>& mine)>;

// Runs the trials on the model's device. The tokenizer must be the one the model was trained with.
// Over `world` ranks each decodes the trials i with i % world == rank (in grid order), `share`
// exchanges the answers, and every rank returns the whole result, equal to one process's.
PasskeyResult evaluate_passkey(model::LlamaImpl& model, const data::Tokenizer& tokenizer,
                               const PasskeyOptions& options, int rank = 0, int world = 1,
                               const ShareGenerated& share = {});

}  // namespace longtune::eval
