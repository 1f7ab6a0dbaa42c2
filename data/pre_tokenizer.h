// The pre-tokenizer chain of an HF tokenizer.json, as HF tokenizers runs it before a byte-level BPE:
// Split (a regex or a string, each of HF's five delimiter behaviours, invert), ByteLevel (with or
// without its GPT-2 regex and prefix space) and Digits, alone or in a Sequence. Regexes run on
// PCRE2 (JIT, UTF, Unicode properties), with the one place where Oniguruma, HF's engine, and PCRE2
// disagree on LLaMA-family patterns rewritten (\s also matching U+0085). It cuts text into pieces
// that keep their byte offsets in the input; it does not normalize and does not map bytes to ids.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace longtune::data {

// Bytes [begin, end) of the input, preceded by one space the chain added (ByteLevel's
// add_prefix_space) when `prefix_space` is set.
struct Piece {
  uint32_t begin = 0;
  uint32_t end = 0;
  bool prefix_space = false;
};

// A compiled PCRE2 pattern with Oniguruma's meaning of \s. Thread-safe (per-call match data).
class Regex {
 public:
  // Throws longtune::Error naming `what` and PCRE2's message if the pattern does not compile.
  Regex(std::string_view pattern, const std::string& what);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  // Non-empty matches in `text`, left to right, as [begin, end) byte offsets.
  void find_all(std::string_view text, std::vector<std::pair<uint32_t, uint32_t>>& matches) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*
};

// Oniguruma → PCRE2: \s and \S (inside and outside classes) also cover U+0085, which Oniguruma's
// Unicode \s includes and PCRE2's does not. Exposed for its test.
std::string onig_to_pcre2(std::string_view pattern);

class PreTokenizerStep;

class PreTokenizer {
 public:
  // `config` is tokenizer.json's "pre_tokenizer" (null: the whole text is one piece). Throws
  // longtune::Error naming `what` and the unsupported type or malformed field.
  PreTokenizer(const nlohmann::json& config, const std::string& what);
  ~PreTokenizer();
  PreTokenizer(PreTokenizer&&) noexcept;
  PreTokenizer& operator=(PreTokenizer&&) noexcept;

  // Pieces of text[begin, end), appended to `out` in order. Thread-safe.
  void split(std::string_view text, uint32_t begin, uint32_t end, std::vector<Piece>& out) const;
  // Whether the chain contains a ByteLevel step (the BPE model then sees bytes, not characters).
  bool byte_level() const { return byte_level_; }

 private:
  std::vector<std::unique_ptr<PreTokenizerStep>> steps_;
  bool byte_level_ = false;
};

}  // namespace longtune::data
