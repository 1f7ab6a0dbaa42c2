#include "data/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/json_value.h"

namespace longtune::data {
namespace {

using Json = nlohmann::json;
using Range = std::pair<uint32_t, uint32_t>;

// GPT-2's pattern, which HF's ByteLevel pre-tokenizer applies when use_regex is set.
constexpr std::string_view kByteLevelPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof buffer);
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string onig_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 's') {
        out += in_class ? R"(\s\x{85})" : R"([\s\x{85}])";
      } else if (next == 'S') {
        LT_CHECK(!in_class, "regex {}: \\S inside a character class is not supported", pattern);
        out += R"([^\s\x{85}])";
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(std::string_view pattern, const std::string& what) {
  const std::string translated = onig_to_pcre2(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  LT_CHECK(code_ != nullptr, "{}: regex {} does not compile at offset {}: {}", what, pattern, offset,
           pcre2_message(error));
  // JIT is an optimisation: where it is unavailable the interpreter gives the same matches.
  pcre2_jit_compile(static_cast<pcre2_code*>(code_), PCRE2_JIT_COMPLETE);
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view text, std::vector<Range>& matches) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code, nullptr);
  LT_CHECK(data != nullptr, "regex: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  PCRE2_SIZE start = 0;
  while (start <= text.size()) {
    const int rc = pcre2_match(code, subject, text.size(), start, 0, data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(data);
      LT_FAIL("regex: match failed: {}", pcre2_message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
    const PCRE2_SIZE begin = ovector[0];
    const PCRE2_SIZE end = ovector[1];
    if (end > begin) {
      matches.emplace_back(static_cast<uint32_t>(begin), static_cast<uint32_t>(end));
      start = end;
    } else {  // an empty match: step over one character (HF drops empty pieces)
      start = end + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
    }
  }
  pcre2_match_data_free(data);
}

// ---------------------------------------------------------------------------------------------

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// One step of the chain: cuts a piece's text into (range, is_match) segments, which `split`
// combines by its behaviour exactly as HF's SplitDelimiterBehavior does.
class PreTokenizerStep {
 public:
  virtual ~PreTokenizerStep() = default;
  virtual void apply(std::string_view text, const std::vector<Piece>& in, std::vector<Piece>& out) const = 0;
};

namespace {

// Materialised text of a piece (with its virtual prefix space) and the way back to input offsets.
struct PieceText {
  std::string_view view;
  std::string storage;
  PieceText(std::string_view text, const Piece& piece) {
    const std::string_view raw = text.substr(piece.begin, piece.end - piece.begin);
    if (piece.prefix_space) {
      storage.reserve(raw.size() + 1);
      storage += ' ';
      storage += raw;
      view = storage;
    } else {
      view = raw;
    }
  }
};

Piece sub_piece(const Piece& piece, uint32_t local_begin, uint32_t local_end) {
  if (!piece.prefix_space) return {piece.begin + local_begin, piece.begin + local_end, false};
  if (local_begin == 0) return {piece.begin, piece.begin + local_end - 1, true};
  return {piece.begin + local_begin - 1, piece.begin + local_end - 1, false};
}

std::vector<Range> combine(const std::vector<std::pair<Range, bool>>& segments, Behavior behavior) {
  std::vector<Range> out;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::Removed:
      for (const auto& [range, is_match] : segments)
        if (!is_match) out.push_back(range);
      break;
    case Behavior::Isolated:
      for (const auto& [range, is_match] : segments) out.push_back(range);
      break;
    case Behavior::MergedWithPrevious:
      for (const auto& [range, is_match] : segments) {
        if (is_match && !previous_match && !out.empty()) out.back().second = range.second;
        else out.push_back(range);
        previous_match = is_match;
      }
      break;
    case Behavior::MergedWithNext:
      for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
        if (it->second && !previous_match && !out.empty()) out.back().first = it->first.first;
        else out.push_back(it->first);
        previous_match = it->second;
      }
      std::reverse(out.begin(), out.end());
      break;
    case Behavior::Contiguous:
      for (const auto& [range, is_match] : segments) {
        if (is_match == previous_match && !out.empty()) out.back().second = range.second;
        else out.push_back(range);
        previous_match = is_match;
      }
      break;
  }
  return out;
}

// Split / Digits / ByteLevel's regex: matches of a pattern, combined by a behaviour.
class PatternSplit : public PreTokenizerStep {
 public:
  PatternSplit(std::string_view regex, std::string literal, Behavior behavior, bool invert, const std::string& what)
      : literal_(std::move(literal)), behavior_(behavior), invert_(invert) {
    if (literal_.empty()) regex_ = std::make_unique<Regex>(regex, what);
  }

  void apply(std::string_view text, const std::vector<Piece>& in, std::vector<Piece>& out) const override {
    std::vector<Range> matches;
    std::vector<std::pair<Range, bool>> segments;
    for (const Piece& piece : in) {
      const PieceText piece_text(text, piece);
      const std::string_view view = piece_text.view;
      matches.clear();
      find(view, matches);
      segments.clear();
      uint32_t previous = 0;
      for (const Range& match : matches) {
        if (match.first > previous) segments.push_back({{previous, match.first}, invert_});
        segments.push_back({match, !invert_});
        previous = match.second;
      }
      if (previous < view.size()) segments.push_back({{previous, static_cast<uint32_t>(view.size())}, invert_});
      for (const Range& range : combine(segments, behavior_))
        if (range.second > range.first) out.push_back(sub_piece(piece, range.first, range.second));
    }
  }

 private:
  void find(std::string_view view, std::vector<Range>& matches) const {
    if (regex_) return regex_->find_all(view, matches);
    for (size_t at = view.find(literal_); at != std::string_view::npos; at = view.find(literal_, at + literal_.size()))
      matches.emplace_back(static_cast<uint32_t>(at), static_cast<uint32_t>(at + literal_.size()));
  }

  std::unique_ptr<Regex> regex_;
  std::string literal_;
  Behavior behavior_;
  bool invert_;
};

// ByteLevel's prefix space: a space before each piece that does not start with one.
class PrefixSpace : public PreTokenizerStep {
 public:
  void apply(std::string_view text, const std::vector<Piece>& in, std::vector<Piece>& out) const override {
    for (Piece piece : in) {
      if (!piece.prefix_space && (piece.end == piece.begin || text[piece.begin] != ' ')) piece.prefix_space = true;
      out.push_back(piece);
    }
  }
};

Behavior parse_behavior(const Json& value, const std::string& what) {
  const std::string name = json_value<std::string>(value, what + ".behavior");
  if (name == "Removed") return Behavior::Removed;
  if (name == "Isolated") return Behavior::Isolated;
  if (name == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::MergedWithNext;
  if (name == "Contiguous") return Behavior::Contiguous;
  LT_FAIL("{}.behavior: unknown behavior '{}'", what, name);
}

bool flag(const Json& node, const char* key, bool fallback, const std::string& what) {
  if (!node.contains(key) || node[key].is_null()) return fallback;
  return json_value<bool>(node[key], what + "." + key);
}

void add_steps(const Json& node, const std::string& what, std::vector<std::unique_ptr<PreTokenizerStep>>& steps,
               bool& byte_level) {
  LT_CHECK(node.is_object(), "{}: expected an object, got {}", what, node.type_name());
  LT_CHECK(node.contains("type"), "{}: has no \"type\"", what);
  const std::string type = json_value<std::string>(node["type"], what + ".type");
  if (type == "Sequence") {
    LT_CHECK(node.contains("pretokenizers") && node["pretokenizers"].is_array(),
             "{}: Sequence needs a \"pretokenizers\" array", what);
    size_t i = 0;
    for (const Json& child : node["pretokenizers"])
      add_steps(child, fmt::format("{}.pretokenizers[{}]", what, i++), steps, byte_level);
  } else if (type == "Split") {
    LT_CHECK(node.contains("pattern") && node["pattern"].is_object(), "{}: Split needs a \"pattern\" object", what);
    const Json& pattern = node["pattern"];
    const Behavior behavior = parse_behavior(node.value("behavior", Json("Isolated")), what);
    const bool invert = flag(node, "invert", false, what);
    if (pattern.contains("Regex")) {
      const std::string regex = json_value<std::string>(pattern["Regex"], what + ".pattern.Regex");
      steps.push_back(std::make_unique<PatternSplit>(regex, "", behavior, invert, what + ".pattern"));
    } else if (pattern.contains("String")) {
      const std::string literal = json_value<std::string>(pattern["String"], what + ".pattern.String");
      LT_CHECK(!literal.empty(), "{}.pattern.String: empty", what);
      steps.push_back(std::make_unique<PatternSplit>("", literal, behavior, invert, what + ".pattern"));
    } else {
      LT_FAIL("{}.pattern: expected \"Regex\" or \"String\"", what);
    }
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (flag(node, "add_prefix_space", true, what)) steps.push_back(std::make_unique<PrefixSpace>());
    if (flag(node, "use_regex", true, what))
      steps.push_back(std::make_unique<PatternSplit>(kByteLevelPattern, "", Behavior::Isolated, false, what));
  } else if (type == "Digits") {
    // HF splits on char::is_numeric (Unicode N), one match per character.
    const bool individual = flag(node, "individual_digits", false, what);
    steps.push_back(std::make_unique<PatternSplit>(individual ? R"(\p{N})" : R"(\p{N}+)", "", Behavior::Isolated,
                                                   false, what));
  } else {
    LT_FAIL("{}: pre-tokenizer type '{}' is not supported (supported: Sequence, Split, ByteLevel, Digits)", what,
            type);
  }
}

}  // namespace

PreTokenizer::PreTokenizer(const Json& config, const std::string& what) {
  if (!config.is_null()) add_steps(config, what, steps_, byte_level_);
}

PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

void PreTokenizer::split(std::string_view text, uint32_t begin, uint32_t end, std::vector<Piece>& out) const {
  std::vector<Piece> current{{begin, end, false}};
  std::vector<Piece> next;
  for (const auto& step : steps_) {
    next.clear();
    step->apply(text, current, next);
    current.swap(next);
  }
  out.insert(out.end(), current.begin(), current.end());
}

}  // namespace longtune::data
