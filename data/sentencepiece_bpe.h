// A fast encoder for SentencePiece BPE models with an identity normalizer: LLaMA-1/2's
// tokenizer.model and the ones `longtune tokenizer train` makes. It gives the ids
// SentencePieceProcessor::Encode gives (the library stays the reference and the tests compare the
// two, and Python sentencepiece, on every corpus book and on adversarial text), read from the
// model file's own fields, with merges looked up by piece-id pairs instead of by string: the
// system library (Debian's 0.1.97) hashes a string per candidate pair and runs at half the speed
// of the 0.2.x in the Python wheel. `load` returns nullptr for what it does not cover (unigram
// models, a normalization charsmap, user-defined symbols, whitespace as suffix, pieces the library
// would refuse) and for text that is not valid UTF-8 `encode` returns nullopt: those stay with the
// library. Not decoding, not training.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace longtune::data {

class SentencePieceBpe {
 public:
  // The encoder for the serialized ModelProto `model`, or nullptr if the model is outside what it
  // covers (or does not parse: the library then reports why).
  static std::unique_ptr<SentencePieceBpe> load(std::string_view model);

  // Ids of `text` as SentencePieceProcessor::Encode gives them; nullopt if `text` is not valid UTF-8.
  std::optional<std::vector<int32_t>> encode(std::string_view text) const;

 private:
  enum class PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  // Where an unused piece was formed from, as the library records it: the last pair seen.
  using SplitMap = std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>;
  struct Symbol {  // a run of the normalized text, one character or a merged piece
    uint32_t begin, size;
    int32_t id, prev, next;  // id -1: no piece has this text; prev/next: neighbours, -1 at the ends
  };

  SentencePieceBpe() = default;
  // BPE over characters [first, last) of the normalized text (char_ends: each character's end).
  void merge(std::string_view all, const std::vector<uint32_t>& char_ends, size_t first, size_t last,
             std::vector<Symbol>& symbols, SplitMap& splits) const;
  int32_t char_id(std::string_view character) const;
  bool is_space_char(std::string_view all, const std::vector<uint32_t>& char_ends, size_t c) const;
  bool mergeable(int32_t id) const;  // a piece BPE may form: normal, user-defined or unused
  int32_t piece_id(std::string_view text) const;  // -1 if no piece has this text
  // A final symbol as (id, text) pairs: unused pieces split back, what is no piece as the unknown id.
  void resegment(std::string_view piece, int32_t id, const SplitMap& splits,
                 std::vector<std::pair<int32_t, std::string_view>>& out, int depth) const;

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids_;
  std::unordered_map<uint64_t, int32_t> pair_to_piece_;  // (left id << 32 | right id) -> mergeable piece
  std::vector<int32_t> byte_ids_;                        // byte -> id of its <0xXX> piece (all 256 with byte fallback)
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  bool has_unused_ = false;
  // No piece holds a space symbol after another character, and none is unused: then no merge
  // crosses the start of a word (its leading space symbols), and words are merged one by one.
  bool words_independent_ = false;
  std::string space_;                  // the normalized space: U+2581, or " " without escaping
  std::array<int32_t, 128> ascii_ids_;  // single ASCII characters' piece ids, -1 where the vocabulary has none
  int32_t space_id_ = -1;
};

}  // namespace longtune::data
