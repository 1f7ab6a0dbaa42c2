// Passkey prompts: the Landmark wording, and a search over the filler lengths (in characters, as
// the reference counts them) that puts the key k tokens from the end of a prompt of L' tokens.
#include "eval/passkey_prompt.h"

#include <fmt/format.h>

#include <random>

#include "common/check.h"

namespace longtune::eval {

namespace {

constexpr std::string_view kKeyLead = "The pass key is ";

bool fits(const PasskeyPrompt& prompt, int64_t length, int64_t distance) {
  return static_cast<int64_t>(prompt.ids.size()) <= length && prompt.distance() <= distance;
}

// The largest n in [lo, ...) with ok(n), given ok(lo); `guess` seeds the upward search.
template <typename Ok>
size_t largest_satisfying(size_t lo, size_t guess, const Ok& ok) {
  size_t hi = std::max(guess, lo + 1);
  while (ok(hi)) {  // grow until the first failure
    lo = hi;
    hi = hi * 2 + 16;
  }
  while (hi - lo > 1) {  // ok(lo), !ok(hi)
    const size_t mid = lo + (hi - lo) / 2;
    (ok(mid) ? lo : hi) = mid;
  }
  return lo;
}

}  // namespace

std::string passkey_filler(size_t chars) {
  std::string out;
  out.reserve(chars + kPasskeyFiller.size() + 1);
  while (out.size() < chars) {
    if (!out.empty()) out += ' ';
    out += kPasskeyFiller;
  }
  out.resize(chars);
  return out;
}

std::string passkey_information_line(int64_t key) {
  return fmt::format("The pass key is {}. Remember it. {} is the pass key.", key, key);
}

std::string passkey_prompt_text(size_t prefix_chars, size_t suffix_chars, int64_t key) {
  return fmt::format("{}\n{}\n{}\n{}\n{}", kPasskeyTask, passkey_filler(prefix_chars), passkey_information_line(key),
                     passkey_filler(suffix_chars), kPasskeyQuestion);
}

PasskeyPrompt tokenize_passkey_prompt(const data::Tokenizer& tokenizer, int64_t bos_id, size_t prefix_chars,
                                      size_t suffix_chars, int64_t key) {
  LT_CHECK(bos_id >= 0, "passkey prompt: the tokenizer {} has no BOS", tokenizer.path().string());
  const std::string text = passkey_prompt_text(prefix_chars, suffix_chars, key);
  const std::vector<data::TokenSpan> spans = tokenizer.encode_with_spans(text);
  // Byte offset of the key's first digit: task, "\n", prefix, "\n", "The pass key is ".
  const size_t key_offset = kPasskeyTask.size() + 1 + prefix_chars + 1 + kKeyLead.size();
  PasskeyPrompt prompt;
  prompt.key = key;
  prompt.prefix_chars = prefix_chars;
  prompt.suffix_chars = suffix_chars;
  prompt.ids.reserve(spans.size() + 1);
  prompt.ids.push_back(bos_id);
  prompt.key_position = -1;
  for (size_t i = 0; i < spans.size(); ++i) {
    prompt.ids.push_back(spans[i].id);
    if (prompt.key_position < 0 && spans[i].end > key_offset && spans[i].begin <= key_offset)
      prompt.key_position = static_cast<int64_t>(i) + 1;
  }
  LT_CHECK(prompt.key_position > 0, "passkey prompt: no token of {} covers byte {} (the key)",
           tokenizer.path().string(), key_offset);
  return prompt;
}

PasskeyPrompt fit_passkey_prompt(const data::Tokenizer& tokenizer, int64_t bos_id, int64_t key, int64_t length,
                                 int64_t distance, const PasskeyPrompt* hint) {
  const auto make = [&](size_t prefix, size_t suffix) {
    return tokenize_passkey_prompt(tokenizer, bos_id, prefix, suffix, key);
  };
  const auto too_long = [&](const PasskeyPrompt& p) { return static_cast<int64_t>(p.ids.size()) > length; };
  if (hint != nullptr) {
    // What the search below returns: it fits (a suffix of 0 need only fit the length: the key may
    // be unable to come nearer); one more suffix character (without prefix) would pass the distance
    // or the length; one more prefix character would pass the length.
    PasskeyPrompt candidate = make(hint->prefix_chars, hint->suffix_chars);
    const bool fitted = hint->suffix_chars == 0 ? !too_long(candidate) : fits(candidate, length, distance);
    if (fitted && !fits(make(0, hint->suffix_chars + 1), length, distance) &&
        too_long(make(hint->prefix_chars + 1, hint->suffix_chars)))
      return candidate;
  }
  const PasskeyPrompt shortest = make(0, 0);
  LT_CHECK(static_cast<int64_t>(shortest.ids.size()) <= length,
           "passkey: the prompt without filler is already {} tokens, more than the length {}", shortest.ids.size(),
           length);
  // Roughly 4 characters per token: a starting guess only; the searches are exact.
  const auto guess = [](int64_t tokens) { return static_cast<size_t>(std::max<int64_t>(tokens, 1) * 4); };
  size_t suffix = 0;
  if (fits(shortest, length, distance)) {
    suffix = largest_satisfying(0, guess(distance - shortest.distance()),
                                [&](size_t s) { return fits(make(0, s), length, distance); });
  }
  const PasskeyPrompt no_prefix = make(0, suffix);
  const size_t prefix =
      largest_satisfying(0, guess(length - static_cast<int64_t>(no_prefix.ids.size())), [&](size_t p) {
        return static_cast<int64_t>(make(p, suffix).ids.size()) <= length;
      });
  return make(prefix, suffix);
}

std::string passkey_drill_text(uint64_t seed, int64_t count, size_t max_filler_chars, int64_t key_digits) {
  LT_CHECK(count >= 1, "passkey drills: count must be >= 1, got {}", count);
  LT_CHECK(key_digits >= 1 && key_digits <= 18, "passkey drills: key digits must be in [1, 18], got {}", key_digits);
  std::mt19937_64 rng(seed);
  int64_t low = 1;
  for (int64_t i = 1; i < key_digits; ++i) low *= 10;
  // Uniform in [0, n] without the implementation-defined std::uniform_int_distribution.
  const auto uniform = [&](uint64_t n) { return rng() % (n + 1); };
  std::string text;
  for (int64_t i = 0; i < count; ++i) {
    const size_t filler = uniform(max_filler_chars);
    const size_t prefix = uniform(filler);
    const int64_t key = low + static_cast<int64_t>(uniform(static_cast<uint64_t>(low * 10 - low - 1)));
    text += passkey_prompt_text(prefix, filler - prefix, key) + fmt::format(" {}.\n\n", key);
  }
  return text;
}

std::optional<int64_t> parse_passkey_answer(std::string_view output) {
  const size_t first = output.find_first_of("0123456789");
  if (first == std::string_view::npos) return std::nullopt;
  size_t last = first;
  while (last < output.size() && output[last] >= '0' && output[last] <= '9') ++last;
  std::string_view digits = output.substr(first, last - first);
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  if (digits.size() > 18) return std::nullopt;
  int64_t value = 0;
  for (char c : digits) value = value * 10 + (c - '0');
  return value;
}

}  // namespace longtune::eval
