// SentencePiece's BPE encoding (data/sentencepiece_bpe.h), step for step as the library's
// normalizer (identity), bpe::Model::SampleEncode (without dropout) and
// SentencePieceProcessor::Encode (byte fallback, runs of unknowns) do it.
#include "data/sentencepiece_bpe.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <queue>

namespace longtune::data {
namespace {

// The protobuf wire format, as far as a ModelProto needs it.
class WireReader {
 public:
  explicit WireReader(std::string_view bytes) : rest_(bytes) {}
  bool done() const { return rest_.empty(); }
  bool failed() const { return failed_; }

  // The next field: its number and wire type; false at the end or on malformed input.
  bool next(uint32_t& field, uint32_t& wire_type) {
    if (rest_.empty() || failed_) return false;
    const uint64_t key = varint();
    field = static_cast<uint32_t>(key >> 3);
    wire_type = static_cast<uint32_t>(key & 7);
    return !failed_;
  }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) break;
      const auto byte = static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    failed_ = true;
    return 0;
  }
  std::string_view bytes() {
    const uint64_t size = varint();
    if (failed_ || size > rest_.size()) {
      failed_ = true;
      return {};
    }
    const std::string_view out = rest_.substr(0, size);
    rest_.remove_prefix(size);
    return out;
  }
  uint32_t fixed32() {
    if (rest_.size() < 4) {
      failed_ = true;
      return 0;
    }
    uint32_t value = 0;
    for (int b = 3; b >= 0; --b) value = (value << 8) | static_cast<uint8_t>(rest_[b]);
    rest_.remove_prefix(4);
    return value;
  }
  void skip(uint32_t wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: rest_.size() >= 8 ? rest_.remove_prefix(8) : void(failed_ = true); break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: failed_ = true;  // groups: not in a ModelProto
    }
  }

 private:
  std::string_view rest_;
  bool failed_ = false;
};

// Length of the UTF-8 character at the start of `s`, or 0 if it is not a valid one (overlong forms,
// surrogates and code points past U+10FFFF count as invalid, as strictly as any decoder would).
size_t utf8_char_length(std::string_view s) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (b0 < 0x80) return 1;
  size_t length = 0;
  uint32_t min = 0, code = 0;
  if ((b0 & 0xe0) == 0xc0) length = 2, min = 0x80, code = b0 & 0x1f;
  else if ((b0 & 0xf0) == 0xe0) length = 3, min = 0x800, code = b0 & 0x0f;
  else if ((b0 & 0xf8) == 0xf0) length = 4, min = 0x10000, code = b0 & 0x07;
  else return 0;
  if (s.size() < length) return 0;
  for (size_t i = 1; i < length; ++i) {
    const auto b = static_cast<uint8_t>(s[i]);
    if ((b & 0xc0) != 0x80) return 0;
    code = (code << 6) | (b & 0x3f);
  }
  if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
  return length;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

constexpr std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, what spaces become
constexpr int kMaxResegmentDepth = 100;                     // the library's bound

}  // namespace

std::unique_ptr<SentencePieceBpe> SentencePieceBpe::load(std::string_view model) {
  std::unique_ptr<SentencePieceBpe> bpe(new SentencePieceBpe());
  uint64_t model_type = 1;  // UNIGRAM unless the trainer spec says otherwise
  bool whitespace_as_suffix = false;
  std::string_view charsmap;
  WireReader reader(model);
  uint32_t field = 0, wire = 0;
  while (reader.next(field, wire)) {
    if (field == 1 && wire == 2) {  // SentencePiece
      WireReader piece_reader(reader.bytes());
      Piece piece;
      while (piece_reader.next(field, wire)) {
        if (field == 1 && wire == 2) piece.text = std::string(piece_reader.bytes());
        else if (field == 2 && wire == 5) {
          const uint32_t bits = piece_reader.fixed32();
          std::memcpy(&piece.score, &bits, sizeof bits);
        } else if (field == 3 && wire == 0) {
          const uint64_t type = piece_reader.varint();
          if (type < 1 || type > 6) return nullptr;  // an enum value protobuf would not take as a type
          piece.type = static_cast<PieceType>(type);
        } else {
          if (field == 0) return nullptr;
          piece_reader.skip(wire);
        }
      }
      if (piece_reader.failed()) return nullptr;
      bpe->pieces_.push_back(std::move(piece));
    } else if ((field == 2 || field == 3) && wire == 2) {  // TrainerSpec, NormalizerSpec
      const bool trainer = field == 2;
      WireReader spec(reader.bytes());
      while (spec.next(field, wire)) {
        if (trainer && field == 3 && wire == 0) model_type = spec.varint();
        else if (trainer && field == 35 && wire == 0) bpe->byte_fallback_ = spec.varint() != 0;
        else if (trainer && field == 24 && wire == 0) whitespace_as_suffix = spec.varint() != 0;
        else if (!trainer && field == 2 && wire == 2) charsmap = spec.bytes();
        else if (!trainer && field == 3 && wire == 0) bpe->add_dummy_prefix_ = spec.varint() != 0;
        else if (!trainer && field == 4 && wire == 0) bpe->remove_extra_whitespaces_ = spec.varint() != 0;
        else if (!trainer && field == 5 && wire == 0) bpe->escape_whitespaces_ = spec.varint() != 0;
        else if (field == 0) return nullptr;
        else spec.skip(wire);
      }
      if (spec.failed()) return nullptr;
    } else if (field == 5 && wire == 2) {  // denormalizer: one with a charsmap the library builds (and may refuse)
      WireReader spec(reader.bytes());
      while (spec.next(field, wire)) {
        if (field == 0 || (field == 2 && wire == 2 && !spec.bytes().empty())) return nullptr;
        if (!(field == 2 && wire == 2)) spec.skip(wire);
      }
      if (spec.failed()) return nullptr;
    } else if (field == 0) {
      return nullptr;
    } else {
      reader.skip(wire);
    }
  }
  if (reader.failed() || !reader.done() || model_type != 2 || whitespace_as_suffix || !charsmap.empty())
    return nullptr;

  bpe->byte_ids_.assign(256, -1);
  uint64_t split_work = 0;  // bytes hashed to build the merge table
  bool negative_zero = false, positive_zero = false;
  for (size_t i = 0; i < bpe->pieces_.size(); ++i) {
    const Piece& piece = bpe->pieces_[i];
    const auto type = static_cast<int>(piece.type);
    // What the library refuses or treats specially is left to it.
    if (piece.text.empty() || piece.text.size() >= 8000 || piece.text.find('\0') != std::string::npos ||
        type < 1 || type > 6 || piece.type == PieceType::kUserDefined)
      return nullptr;
    // 0.2.3 orders scores by bit pattern, which float comparison matches except for NaN and for
    // -0.0 against +0.0 (trained BPE models give the first merge -0.0 and no mergeable piece +0.0).
    if (bpe->mergeable(static_cast<int32_t>(i))) {
      if (std::isnan(piece.score)) return nullptr;
      if (piece.score == 0) (std::signbit(piece.score) ? negative_zero : positive_zero) = true;
    }
    split_work += piece.text.size() * piece.text.size();
    if (!bpe->ids_.emplace(piece.text, static_cast<int32_t>(i)).second) return nullptr;
    if (piece.type == PieceType::kUnknown) {
      if (bpe->unk_id_ >= 0) return nullptr;
      bpe->unk_id_ = static_cast<int32_t>(i);
    }
    if (piece.type == PieceType::kUnused) bpe->has_unused_ = true;
    if (piece.type == PieceType::kByte) {
      unsigned value = 0;
      if (!bpe->byte_fallback_ || piece.text.size() != 6 ||
          std::sscanf(piece.text.c_str(), "<0x%02X>", &value) != 1 || fmt::format("<0x{:02X}>", value) != piece.text)
        return nullptr;
      bpe->byte_ids_[value] = static_cast<int32_t>(i);
    }
  }
  // Real vocabularies need a few MB of hashing; a file of thousands of 8 kB pieces is left to the library.
  if (bpe->unk_id_ < 0 || split_work > (uint64_t{1} << 30) || (negative_zero && positive_zero)) return nullptr;
  if (bpe->byte_fallback_)
    for (int32_t id : bpe->byte_ids_)
      if (id < 0) return nullptr;
  bpe->space_ = bpe->escape_whitespaces_ ? std::string(kSpaceSymbol) : std::string(" ");
  bpe->space_id_ = bpe->piece_id(bpe->space_);
  for (int c = 0; c < 128; ++c) bpe->ascii_ids_[c] = bpe->piece_id(std::string(1, static_cast<char>(c)));
  bpe->words_independent_ = !bpe->has_unused_;
  // Every way a mergeable piece splits into two pieces: the merges, looked up by id pair.
  for (size_t i = 0; i < bpe->pieces_.size(); ++i) {
    if (!bpe->mergeable(static_cast<int32_t>(i))) continue;
    const std::string_view text = bpe->pieces_[i].text;
    const std::string_view space = bpe->space_;
    for (size_t at = text.find(space, 1); at != std::string_view::npos; at = text.find(space, at + 1))
      if (!(at >= space.size() && text.substr(at - space.size(), space.size()) == space))
        bpe->words_independent_ = false;  // a space symbol right after another character
    for (size_t cut = 1; cut < text.size(); ++cut) {
      if ((static_cast<uint8_t>(text[cut]) & 0xc0) == 0x80) continue;  // inside a character
      const int32_t left = bpe->piece_id(text.substr(0, cut));
      const int32_t right = bpe->piece_id(text.substr(cut));
      if (left >= 0 && right >= 0) bpe->pair_to_piece_[pair_key(left, right)] = static_cast<int32_t>(i);
    }
  }
  return bpe;
}

int32_t SentencePieceBpe::char_id(std::string_view character) const {
  if (character.size() == 1) return ascii_ids_[static_cast<uint8_t>(character[0])];
  if (character == space_) return space_id_;
  return piece_id(character);
}

bool SentencePieceBpe::is_space_char(std::string_view all, const std::vector<uint32_t>& char_ends, size_t c) const {
  const uint32_t begin = c == 0 ? 0 : char_ends[c - 1];
  return all.substr(begin, char_ends[c] - begin) == space_;
}

bool SentencePieceBpe::mergeable(int32_t id) const {
  const PieceType type = pieces_[id].type;
  return type == PieceType::kNormal || type == PieceType::kUserDefined || type == PieceType::kUnused;
}

int32_t SentencePieceBpe::piece_id(std::string_view text) const {
  const auto it = ids_.find(text);
  return it == ids_.end() ? -1 : it->second;
}

void SentencePieceBpe::resegment(std::string_view piece, int32_t id, const SplitMap& splits,
                                 std::vector<std::pair<int32_t, std::string_view>>& out, int depth) const {
  if (depth > kMaxResegmentDepth) return out.emplace_back(id < 0 ? unk_id_ : id, piece), void();
  if (id < 0 || !mergeable(id)) return out.emplace_back(unk_id_, piece), void();
  if (pieces_[id].type != PieceType::kUnused) return out.emplace_back(id, piece), void();
  const auto split = splits.find(piece);
  if (split == splits.end()) return out.emplace_back(unk_id_, piece), void();
  resegment(split->second.first, piece_id(split->second.first), splits, out, depth + 1);
  resegment(split->second.second, piece_id(split->second.second), splits, out, depth + 1);
}

void SentencePieceBpe::merge(std::string_view all, const std::vector<uint32_t>& char_ends, size_t first, size_t last,
                             std::vector<Symbol>& symbols, SplitMap& splits) const {
  // One symbol per character, linked; merged symbols grow to the right.
  symbols.resize(last - first);
  for (size_t i = 0; i < symbols.size(); ++i) {
    const uint32_t begin = first + i == 0 ? 0 : char_ends[first + i - 1];
    const std::string_view character = all.substr(begin, char_ends[first + i] - begin);
    symbols[i] = {begin, static_cast<uint32_t>(character.size()), char_id(character), static_cast<int32_t>(i) - 1,
                  i + 1 < symbols.size() ? static_cast<int32_t>(i + 1) : -1};
  }
  struct Candidate {
    float score;
    int32_t left, right;
    uint32_t size;
    int32_t piece;  // what the pair merges into
  };
  // Highest score first; among equal scores the leftmost.
  const auto lower = [](const Candidate& a, const Candidate& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(lower)> agenda(lower, std::move(storage));
  const auto consider = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& a = symbols[left];
    const Symbol& b = symbols[right];
    int32_t merged = -1;
    if (a.id >= 0 && b.id >= 0) {
      const auto it = pair_to_piece_.find(pair_key(a.id, b.id));
      if (it != pair_to_piece_.end()) merged = it->second;
    } else {  // a character no piece holds: only a string lookup can tell
      merged = piece_id(all.substr(a.begin, a.size + b.size));
      if (merged >= 0 && !mergeable(merged)) merged = -1;
    }
    if (merged < 0) return;
    agenda.push({pieces_[merged].score, left, right, a.size + b.size, merged});
    if (has_unused_ && pieces_[merged].type == PieceType::kUnused)
      splits[all.substr(a.begin, a.size + b.size)] = {all.substr(a.begin, a.size), all.substr(b.begin, b.size)};
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) consider(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));
  while (!agenda.empty()) {
    const Candidate top = agenda.top();
    agenda.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.size == 0 || right.size == 0 || left.size + right.size != top.size) continue;  // stale
    left.id = top.piece;  // not stale: the same two symbols, so the same merged piece
    left.size = top.size;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.size = 0;
    consider(left.prev, top.left);
    consider(top.left, left.next);
  }
}

std::optional<std::vector<int32_t>> SentencePieceBpe::encode(std::string_view text) const {
  // Normalization (identity): spaces to U+2581, the dummy prefix, extra whitespace removed if set.
  std::string normalized;
  normalized.reserve(text.size() + text.size() / 2 + 3);
  const std::string_view space = space_;
  size_t position = 0;
  if (remove_extra_whitespaces_)
    while (position < text.size() && text[position] == ' ') ++position;
  if (position == text.size()) return std::vector<int32_t>{};
  if (add_dummy_prefix_) normalized.append(space);
  bool previous_space = remove_extra_whitespaces_;
  std::vector<uint32_t> char_ends;  // end offset in `normalized` of each character
  char_ends.reserve(text.size() + 1);
  if (add_dummy_prefix_) char_ends.push_back(static_cast<uint32_t>(normalized.size()));
  while (position < text.size()) {
    const size_t length = utf8_char_length(text.substr(position));
    if (length == 0) return std::nullopt;
    const bool is_space = length == 1 && text[position] == ' ';
    if (!(is_space && previous_space)) {
      if (is_space) normalized.append(space);
      else normalized.append(text.substr(position, length));
      char_ends.push_back(static_cast<uint32_t>(normalized.size()));
    }
    previous_space = remove_extra_whitespaces_ && is_space;
    position += length;
  }
  if (remove_extra_whitespaces_)
    while (normalized.size() >= space.size() &&
           std::string_view(normalized).substr(normalized.size() - space.size()) == space) {
      normalized.resize(normalized.size() - space.size());
      char_ends.pop_back();
    }
  if (normalized.empty()) return std::vector<int32_t>{};


  // Merging, per word where no piece spans words (each distinct word once), else over the whole text.
  const std::string_view all(normalized);
  std::vector<std::pair<int32_t, std::string_view>> pieces;
  pieces.reserve(char_ends.size());
  SplitMap splits;
  if (!words_independent_) {
    std::vector<Symbol> symbols;
    merge(all, char_ends, 0, char_ends.size(), symbols, splits);
    for (int32_t i = 0; i >= 0; i = symbols[i].next)
      resegment(all.substr(symbols[i].begin, symbols[i].size), symbols[i].id, splits, pieces, 0);
  } else {
    std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> seen;  // word -> its run in `pieces`
    std::vector<Symbol> symbols;
    size_t word_begin = 0;
    for (size_t c = 1; c <= char_ends.size(); ++c) {
      if (c < char_ends.size() && !(is_space_char(all, char_ends, c) && !is_space_char(all, char_ends, c - 1)))
        continue;
      const uint32_t begin = word_begin == 0 ? 0 : char_ends[word_begin - 1];
      const std::string_view word = all.substr(begin, char_ends[c - 1] - begin);
      const auto [it, fresh] = seen.try_emplace(word, static_cast<uint32_t>(pieces.size()), 0);
      if (fresh) {
        merge(all, char_ends, word_begin, c, symbols, splits);
        for (int32_t i = 0; i >= 0; i = symbols[i].next)
          pieces.emplace_back(symbols[i].id >= 0 && mergeable(symbols[i].id) ? symbols[i].id : unk_id_,
                              all.substr(symbols[i].begin, symbols[i].size));
        it->second.second = static_cast<uint32_t>(pieces.size()) - it->second.first;
      } else {
        for (uint32_t k = 0; k < it->second.second; ++k) pieces.push_back(pieces[it->second.first + k]);
      }
      word_begin = c;
    }
  }

  // Unknowns as bytes (byte fallback) or one id per run.
  std::vector<int32_t> ids;
  ids.reserve(pieces.size());
  bool previous_unknown = false;
  for (const auto& [id, piece] : pieces) {
    const bool unknown = id == unk_id_ || pieces_[id].type == PieceType::kUnknown;
    if (unknown && byte_fallback_) {
      for (const char byte : piece) ids.push_back(byte_ids_[static_cast<uint8_t>(byte)]);
    } else if (!(unknown && previous_unknown)) {
      ids.push_back(id);
    }
    previous_unknown = unknown;
  }
  return ids;
}

}  // namespace longtune::data
