#include "data/bpe_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <queue>

#include "common/check.h"
#include "common/file_io.h"
#include "common/json_value.h"
#include "data/text_source.h"

namespace longtune::data {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// GPT-2's byte ↔ character table: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100 onwards in byte order, so every byte has a visible character in the vocabulary.
std::array<char32_t, 256> byte_to_char() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

// Decodes one UTF-8 character at text[i]; returns its code point and advances i (invalid: U+FFFD, one byte).
char32_t next_char(std::string_view text, size_t& i) {
  const auto c0 = static_cast<unsigned char>(text[i]);
  int length = c0 < 0x80 ? 1 : (c0 >> 5) == 6 ? 2 : (c0 >> 4) == 14 ? 3 : (c0 >> 3) == 30 ? 4 : 0;
  if (length == 0 || i + length > text.size()) {
    ++i;
    return 0xFFFD;
  }
  char32_t cp = length == 1 ? c0 : c0 & (0x7F >> length);
  for (int k = 1; k < length; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  i += length;
  return cp;
}

// The byte string a byte-level vocabulary entry stands for; nullopt if it uses a character outside
// the 256 of the table (such an entry is reachable only as an added token).
std::optional<std::string> byte_level_bytes(std::string_view token) {
  static const std::unordered_map<char32_t, char> from_char = [] {
    std::unordered_map<char32_t, char> map;
    const auto table = byte_to_char();
    for (int b = 0; b < 256; ++b) map[table[b]] = static_cast<char>(b);
    return map;
  }();
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const auto it = from_char.find(next_char(token, i));
    if (it == from_char.end()) return std::nullopt;
    bytes += it->second;
  }
  return bytes;
}

// Rust's char::is_whitespace (Unicode White_Space), which lstrip / rstrip use.
bool is_white_space(char32_t c) {
  return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// The code point ending at text[end) (U+FFFD where it is not valid UTF-8).
char32_t char_before(std::string_view text, size_t end, size_t& begin) {
  begin = end - 1;
  while (begin > 0 && end - begin < 4 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  size_t i = begin;
  const char32_t c = next_char(text, i);
  if (i != end) {
    begin = end - 1;
    return 0xFFFD;
  }
  return c;
}

// Rust's char::is_alphanumeric or '_', for single_word added tokens: word characters are letters,
// marks of letters and numbers; ASCII exactly, beyond ASCII by PCRE2's Unicode tables.
bool is_word_char(std::string_view character) {
  static const Regex word(R"(^[\p{Alphabetic}\p{N}_]$)", "single_word test");
  std::vector<std::pair<uint32_t, uint32_t>> match;
  word.find_all(character, match);
  return !match.empty();
}

std::string what_of(const fs::path& path, std::string_view field) { return fmt::format("{}: {}", path.string(), field); }

}  // namespace

BpeTokenizer::BpeTokenizer(const fs::path& tokenizer_json) : path_(tokenizer_json), pre_tokenizer_(Json(), "") {
  LT_CHECK(fs::is_regular_file(tokenizer_json), "tokenizer {}: no such file", tokenizer_json.string());
  Json root;
  try {
    root = Json::parse(read_file(tokenizer_json));
  } catch (const Json::exception& e) {
    LT_FAIL("tokenizer {}: not valid JSON: {}", tokenizer_json.string(), e.what());
  }
  const std::string file = tokenizer_json.string();
  LT_CHECK(root.is_object() && root.contains("model") && root["model"].is_object(),
           "tokenizer {}: not a tokenizer.json (no \"model\" object)", file);
  const Json& model = root["model"];
  const std::string type = model.contains("type") ? json_value<std::string>(model["type"], what_of(file, "model.type"))
                                                  : std::string("BPE");
  LT_CHECK(type == "BPE", "tokenizer {}: model.type {} is not supported (only byte-level BPE)", file, type);
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    const Json& normalizer = root["normalizer"];
    const bool typed = normalizer.is_object() && normalizer.contains("type") && normalizer["type"].is_string();
    const std::string kind = typed ? normalizer["type"].get<std::string>() : normalizer.dump();
    const bool empty_sequence = kind == "Sequence" && normalizer.contains("normalizers") &&
                                normalizer["normalizers"].is_array() && normalizer["normalizers"].empty();
    LT_CHECK(empty_sequence, "tokenizer {}: normalizer {} is not supported", file, kind);
  }
  if (model.contains("dropout") && !model["dropout"].is_null())
    LT_CHECK(json_value<double>(model["dropout"], what_of(file, "model.dropout")) == 0.0,
             "tokenizer {}: model.dropout is set (BPE dropout is for training, not for preparing data)", file);
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (model.contains(key) && !model[key].is_null())
      LT_CHECK(json_value<std::string>(model[key], what_of(file, std::string("model.") + key)).empty(),
               "tokenizer {}: model.{} is not supported", file, key);
  pre_tokenizer_ = PreTokenizer(root.value("pre_tokenizer", Json()), what_of(file, "pre_tokenizer"));
  LT_CHECK(pre_tokenizer_.byte_level(),
           "tokenizer {}: pre_tokenizer has no ByteLevel step: only byte-level BPE is supported (for a "
           "SentencePiece-style tokenizer pass its tokenizer.model)",
           file);
  ignore_merges_ = model.contains("ignore_merges") && json_value<bool>(model["ignore_merges"], what_of(file, "model.ignore_merges"));
  fuse_unk_ = model.contains("fuse_unk") && !model["fuse_unk"].is_null() &&
              json_value<bool>(model["fuse_unk"], what_of(file, "model.fuse_unk"));
  const bool byte_fallback = model.contains("byte_fallback") && !model["byte_fallback"].is_null() &&
                             json_value<bool>(model["byte_fallback"], what_of(file, "model.byte_fallback"));

  // Vocabulary: byte-level strings back to bytes.
  LT_CHECK(model.contains("vocab") && model["vocab"].is_object(), "tokenizer {}: model.vocab is not an object", file);
  std::vector<std::pair<int32_t, std::string>> entries;
  int32_t max_id = -1;
  for (const auto& [token, id_json] : model["vocab"].items()) {
    const int32_t id = json_value<int32_t>(id_json, what_of(file, "model.vocab[" + token + "]"));
    LT_CHECK(id >= 0, "tokenizer {}: model.vocab[{}] has negative id {}", file, token, id);
    max_id = std::max(max_id, id);
    entries.emplace_back(id, token);
  }
  const Json added_tokens = root.value("added_tokens", Json::array());
  LT_CHECK(added_tokens.is_array(), "tokenizer {}: added_tokens is not an array", file);
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const Json& t = added_tokens[i];
    const std::string what = what_of(file, fmt::format("added_tokens[{}]", i));
    LT_CHECK(t.is_object() && t.contains("id") && t.contains("content"), "{}: needs \"id\" and \"content\"", what);
    AddedToken token;
    token.id = json_value<int32_t>(t["id"], what + ".id");
    LT_CHECK(token.id >= 0, "{}.id: negative", what);
    token.content = json_value<std::string>(t["content"], what + ".content");
    LT_CHECK(!token.content.empty(), "{}.content: empty", what);
    auto get_flag = [&](const char* key) { return t.contains(key) && json_value<bool>(t[key], what + "." + key); };
    token.single_word = get_flag("single_word");
    token.lstrip = get_flag("lstrip");
    token.rstrip = get_flag("rstrip");
    token.normalized = get_flag("normalized");
    max_id = std::max(max_id, token.id);
    added_.push_back(std::move(token));
  }
  LT_CHECK(max_id >= 0, "tokenizer {}: the vocabulary is empty", file);
  token_bytes_.resize(static_cast<size_t>(max_id) + 1);
  byte_id_.fill(-1);
  fallback_id_.fill(-1);
  for (const auto& [id, token] : entries) {
    const std::optional<std::string> bytes = byte_level_bytes(token);
    token_bytes_[id] = bytes ? *bytes : token;
    if (!bytes) continue;
    vocab_.emplace(*bytes, id);
    if (bytes->size() == 1) byte_id_[static_cast<unsigned char>((*bytes)[0])] = id;
    if (byte_fallback && token.size() == 6 && token.starts_with("<0x") && token.back() == '>' &&
        std::isxdigit(static_cast<unsigned char>(token[3])) && std::isxdigit(static_cast<unsigned char>(token[4])))
      fallback_id_[std::stoi(token.substr(3, 2), nullptr, 16)] = id;
  }
  for (size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& token = added_[i];
    added_ids_.emplace(token.content, token.id);
    if (token_bytes_[token.id].empty()) token_bytes_[token.id] = token.content;
    added_by_first_byte_[static_cast<unsigned char>(token.content[0])].push_back(static_cast<int>(i));
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = json_value<std::string>(model["unk_token"], what_of(file, "model.unk_token"));
    const auto found = token_id(unk);
    LT_CHECK(found.has_value(), "tokenizer {}: model.unk_token {} is not in the vocabulary", file, unk);
    unk_id_ = *found;
  }

  // Merges, in either layout ("a b" or ["a", "b"]), by rank.
  LT_CHECK(model.contains("merges") && model["merges"].is_array(), "tokenizer {}: model.merges is not an array", file);
  const Json& merges = model["merges"];
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const Json& merge = merges[rank];
    const std::string what = what_of(file, fmt::format("model.merges[{}]", rank));
    std::string left, right;
    if (merge.is_string()) {
      const std::string line = merge.get<std::string>();
      const size_t space = line.find(' ');
      LT_CHECK(space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
               "{}: {} is not two tokens separated by one space", what, line);
      left = line.substr(0, space);
      right = line.substr(space + 1);
    } else {
      LT_CHECK(merge.is_array() && merge.size() == 2, "{}: expected \"a b\" or [\"a\", \"b\"]", what);
      left = json_value<std::string>(merge[0], what + "[0]");
      right = json_value<std::string>(merge[1], what + "[1]");
    }
    const auto left_bytes = byte_level_bytes(left), right_bytes = byte_level_bytes(right);
    LT_CHECK(left_bytes && right_bytes, "{}: {} {} is not byte-level text", what, left, right);
    const auto a = vocab_.find(*left_bytes), b = vocab_.find(*right_bytes),
               ab = vocab_.find(*left_bytes + *right_bytes);
    LT_CHECK(a != vocab_.end() && b != vocab_.end(), "{}: {} or {} is not in the vocabulary", what, left, right);
    LT_CHECK(ab != vocab_.end(), "{}: the merged token {}{} is not in the vocabulary", what, left, right);
    const uint64_t key = (static_cast<uint64_t>(a->second) << 32) | static_cast<uint32_t>(b->second);
    merges_.insert_or_assign(key, Merge{static_cast<int32_t>(rank), ab->second});  // as HF: a repeated pair keeps its last rank
  }
}

std::optional<int32_t> BpeTokenizer::token_id(std::string_view content) const {
  if (const auto it = added_ids_.find(content); it != added_ids_.end()) return it->second;
  if (const auto bytes = byte_level_bytes(content)) {
    if (const auto it = vocab_.find(*bytes); it != vocab_.end()) return it->second;
  }
  return std::nullopt;
}

std::vector<TokenSpan> BpeTokenizer::encode(std::string_view text) const {
  LT_CHECK(text.size() < (uint64_t{1} << 32), "tokenizer {}: text of {} bytes is over 4 GiB", path_.string(),
           text.size());
  std::vector<TokenSpan> out;
  out.reserve(text.size() / 3 + 1);
  split_added(text, 0, static_cast<uint32_t>(text.size()), false, out);
  return out;
}

// HF's AddedVocabulary: tokens with normalized = false are split out of the raw text first, then
// those with normalized = true out of what is left (the same text here: there is no normalizer).
void BpeTokenizer::split_added(std::string_view text, uint32_t begin, uint32_t end, bool normalized_pass,
                               std::vector<TokenSpan>& out) const {
  auto rest = [&](uint32_t from, uint32_t to) {
    if (from >= to) return;
    if (normalized_pass) encode_plain(text, from, to, out);
    else split_added(text, from, to, true, out);
  };
  uint32_t start_offset = begin;
  uint32_t i = begin;
  while (i < end) {
    const auto& candidates = added_by_first_byte_[static_cast<unsigned char>(text[i])];
    const AddedToken* best = nullptr;
    for (const int index : candidates) {
      const AddedToken& token = added_[index];
      if (token.normalized != normalized_pass || token.content.size() > end - i) continue;
      if (text.compare(i, token.content.size(), token.content) != 0) continue;
      if (!best || token.content.size() > best->content.size()) best = &token;
    }
    if (!best) {
      ++i;
      continue;
    }
    uint32_t start = i, stop = i + static_cast<uint32_t>(best->content.size());
    if (best->single_word) {
      size_t char_begin = 0;
      const bool word_before = start > begin && (char_before(text, start, char_begin), true) &&
                               is_word_char(text.substr(char_begin, start - char_begin));
      size_t j = stop;
      if (stop < end) next_char(text, j);
      const bool word_after = stop < end && is_word_char(text.substr(stop, j - stop));
      if (word_before || word_after) {
        ++i;
        continue;
      }
    }
    if (best->lstrip) {
      uint32_t new_start = start;
      while (new_start > begin) {
        size_t char_begin = 0;
        if (!is_white_space(char_before(text, new_start, char_begin))) break;
        new_start = static_cast<uint32_t>(char_begin);
      }
      start = std::max(new_start, start_offset);
    }
    if (best->rstrip) {
      while (stop < end) {
        size_t j = stop;
        if (!is_white_space(next_char(text, j))) break;
        stop = static_cast<uint32_t>(j);
      }
    }
    rest(start_offset, start);
    out.push_back({best->id, start, stop});
    start_offset = stop;
    i = stop;
  }
  rest(start_offset, end);
}

void BpeTokenizer::encode_plain(std::string_view text, uint32_t begin, uint32_t end, std::vector<TokenSpan>& out) const {
  std::vector<Piece> pieces;
  pre_tokenizer_.split(text, begin, end, pieces);
  for (const Piece& piece : pieces) encode_word(text, piece, out);
}

// BPE over one pre-token: start from its bytes, repeatedly merge the adjacent pair of lowest rank
// (the leftmost among equals), as HF's Word::merge_all does with its priority queue.
void BpeTokenizer::encode_word(std::string_view text, const Piece& piece, std::vector<TokenSpan>& out) const {
  std::string storage;
  std::string_view word = text.substr(piece.begin, piece.end - piece.begin);
  if (piece.prefix_space) {
    storage.reserve(word.size() + 1);
    storage += ' ';
    storage += word;
    word = storage;
  }
  // Local byte offset → input offset (the prefix space covers no input byte).
  auto origin = [&](size_t local) -> uint32_t {
    if (!piece.prefix_space) return piece.begin + static_cast<uint32_t>(local);
    return piece.begin + static_cast<uint32_t>(local == 0 ? 0 : local - 1);
  };
  if (ignore_merges_) {
    if (const auto it = vocab_.find(word); it != vocab_.end()) {
      out.push_back({it->second, origin(0), origin(word.size())});
      return;
    }
  }
  // Symbols: ids with their local byte range; linked so merges remove the right neighbour.
  const size_t n = word.size();
  std::vector<int32_t> id;
  std::vector<uint32_t> start;
  id.reserve(n);
  start.reserve(n + 1);
  for (size_t k = 0; k < n; ++k) {
    const auto byte = static_cast<unsigned char>(word[k]);
    int32_t token = byte_id_[byte];
    if (token < 0) token = fallback_id_[byte];
    if (token < 0) {
      if (unk_id_ < 0) continue;  // as HF: a byte with no token and no unk_token is dropped
      if (fuse_unk_ && !id.empty() && id.back() == unk_id_) continue;
      token = unk_id_;
    }
    id.push_back(token);
    start.push_back(static_cast<uint32_t>(k));
  }
  const size_t symbols = id.size();
  if (symbols == 0) return;
  std::vector<int32_t> next(symbols), prev(symbols);
  for (size_t k = 0; k < symbols; ++k) {
    next[k] = k + 1 < symbols ? static_cast<int32_t>(k + 1) : -1;
    prev[k] = static_cast<int32_t>(k) - 1;
  }
  struct Candidate {
    int32_t rank, left, right, left_id, right_id, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t left) {
    if (left < 0 || next[left] < 0) return;
    const int32_t right = next[left];
    const uint64_t key = (static_cast<uint64_t>(id[left]) << 32) | static_cast<uint32_t>(id[right]);
    const auto it = merges_.find(key);
    if (it != merges_.end()) queue.push({it->second.rank, left, right, id[left], id[right], it->second.id});
  };
  for (size_t k = 0; k + 1 < symbols; ++k) consider(static_cast<int32_t>(k));
  std::vector<bool> alive(symbols, true);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    // Stale: a symbol of the pair was merged away or changed since the pair was queued.
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || id[c.left] != c.left_id ||
        id[c.right] != c.right_id)
      continue;
    id[c.left] = c.merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    consider(prev[c.left]);
    consider(c.left);
  }
  for (int32_t k = 0; k >= 0; k = next[k]) {
    const size_t local_end = next[k] >= 0 ? start[next[k]] : n;
    out.push_back({id[k], origin(start[k]), origin(local_end)});
  }
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (const int32_t token : ids) {
    LT_CHECK(token >= 0 && static_cast<size_t>(token) < token_bytes_.size(), "tokenizer {}: id {} is out of range",
             path_.string(), token);
    text += token_bytes_[token];
  }
  repair_utf8(text);
  return text;
}

}  // namespace longtune::data
