// A byte-level BPE tokenizer read from HF tokenizer.json (GPT-2, Llama 3, SmolLM, Qwen and their
// kin), giving the ids HF tokenizers' encode(text, add_special_tokens=False) gives: added and
// special tokens split out first (leftmost-longest, with lstrip / rstrip / single_word), then the
// pre-tokenizer chain (data/pre_tokenizer), then BPE merges by rank over bytes, with ignore_merges
// and byte_fallback as the file sets them. Not supported, with an error naming the field: a
// normalizer, BPE dropout, subword prefixes/suffixes, non-byte-level BPE, other model types.
// Post-processing (BOS/EOS templates) is not applied: our readers add BOS/EOS themselves.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/pre_tokenizer.h"
#include "data/tokenizer.h"

namespace longtune::data {

class BpeTokenizer {
 public:
  // Throws longtune::Error naming the file and the field if it is not a byte-level BPE tokenizer.json.
  explicit BpeTokenizer(const std::filesystem::path& tokenizer_json);

  // Ids of `text` with the bytes of `text` each covers (a prefix space the chain added covers none).
  // Thread-safe.
  std::vector<TokenSpan> encode(std::string_view text) const;
  // The text of `ids` (added tokens as their content); invalid UTF-8 repaired to U+FFFD.
  std::string decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(token_bytes_.size()); }
  // The id of a token by its text (an added token's content or a vocabulary entry), if any.
  std::optional<int32_t> token_id(std::string_view content) const;

 private:
  struct AddedToken {
    int32_t id = 0;
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = false;
  };
  struct Merge {
    int32_t rank = 0;
    int32_t id = 0;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  void split_added(std::string_view text, uint32_t begin, uint32_t end, bool normalized_pass,
                   std::vector<TokenSpan>& out) const;
  void encode_plain(std::string_view text, uint32_t begin, uint32_t end, std::vector<TokenSpan>& out) const;
  void encode_word(std::string_view text, const Piece& piece, std::vector<TokenSpan>& out) const;

  std::filesystem::path path_;
  PreTokenizer pre_tokenizer_;
  TokenMap vocab_;                         // token bytes (byte-level decoded) → id
  std::vector<std::string> token_bytes_;   // id → bytes, for decode
  std::array<int32_t, 256> byte_id_{};     // single-byte token ids (-1: none)
  std::array<int32_t, 256> fallback_id_{}; // the <0x00>..<0xFF> tokens when byte_fallback (-1: none)
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) → rank and result
  std::vector<AddedToken> added_;
  std::array<std::vector<int>, 256> added_by_first_byte_;
  TokenMap added_ids_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace longtune::data
