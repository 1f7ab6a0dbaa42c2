// The passkey-retrieval prompt of the PI paper's §3.3, which reuses Landmark Attention's
// (Mohtashami & Jaggi 2023, epfml/landmark-attention llama/run_test.py generate_prompt) wording:
// five lines joined by "\n" — the task, a filler prefix, "The pass key is K. Remember it. K is the
// pass key.", a filler suffix, and "What is the pass key? The pass key is" — where a filler of n
// characters is the first n characters of the filler sentence group repeated with single spaces.
// Here the prefix/suffix lengths are chosen so that the tokenized prompt has a given length and
// the key sits k tokens from its end. Also the answer rule: the first integer in the output.
// Not the model, the decoding or the scoring (eval/passkey.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"

namespace longtune::eval {

inline constexpr std::string_view kPasskeyTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there.";
inline constexpr std::string_view kPasskeyFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
inline constexpr std::string_view kPasskeyQuestion = "What is the pass key? The pass key is";

// The first `chars` characters of " ".join([kPasskeyFiller] * many).
std::string passkey_filler(size_t chars);
// "The pass key is {key}. Remember it. {key} is the pass key."
std::string passkey_information_line(int64_t key);
// The five lines joined with "\n" (prefix and suffix as passkey_filler of those lengths).
std::string passkey_prompt_text(size_t prefix_chars, size_t suffix_chars, int64_t key);

struct PasskeyPrompt {
  int64_t key = 0;
  size_t prefix_chars = 0;
  size_t suffix_chars = 0;
  std::vector<int64_t> ids;   // BOS + encode(text): the model input
  int64_t key_position = 0;   // index in `ids` of the token holding the key's first digit
  int64_t distance() const { return static_cast<int64_t>(ids.size()) - key_position; }  // k, in tokens
};

// Tokenizes the prompt for (prefix_chars, suffix_chars, key) and locates the key.
PasskeyPrompt tokenize_passkey_prompt(const data::Tokenizer& tokenizer, int64_t bos_id, size_t prefix_chars,
                                      size_t suffix_chars, int64_t key);

// The prompt of at most `length` tokens (BOS included) whose key lies `distance` tokens from the
// end as nearly as the text allows (the largest distance <= `distance`, or the smallest possible
// one), with the prefix filled until one more character would pass `length`. `hint` (the filler
// lengths found for another key at the same length and distance) is tried first and kept when it
// meets those conditions for this key, which saves the search (keys of equal digit count almost
// always tokenize alike). Throws longtune::Error if even the fixed lines do not fit in `length`.
PasskeyPrompt fit_passkey_prompt(const data::Tokenizer& tokenizer, int64_t bos_id, int64_t key, int64_t length,
                                 int64_t distance, const PasskeyPrompt* hint = nullptr);

// Synthetic retrieval drills (training text, not an evaluation): `count` prompts in the wording
// above, each followed by " {key}." and a blank line. Each drill's filler has a length uniform in
// [0, max_filler_chars] split between prefix and suffix at a uniform point (as Landmark's
// generate_prompt splits it), and a uniform key of `key_digits` digits; all drawn from
// mt19937_64(seed), so the text is the same everywhere. For models too small to learn in-context
// retrieval from their corpus (see scripts/study.sh).
std::string passkey_drill_text(uint64_t seed, int64_t count, size_t max_filler_chars, int64_t key_digits = 5);

// The first run of ASCII digits in `output` as a number (Landmark's re.search(r'\d+')); nullopt
// when there is none or it has more than 18 digits.
std::optional<int64_t> parse_passkey_answer(std::string_view output);

}  // namespace longtune::eval
