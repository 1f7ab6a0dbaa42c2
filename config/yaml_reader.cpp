// Strict typed reads over yaml-cpp with file:line:column error messages, `--set` overrides and
// unknown-key detection. Scalars are parsed here (std::from_chars), not by yaml-cpp's lenient
// converters: `yes` is not a bool, `2.5` is not an integer and a quoted "5" is a string.
// Not the job schema; see job_config.cpp.
#include "config/yaml_reader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "common/check.h"

namespace longtune::config {

struct YamlDocument::State {
  std::string name;                              // file path or caller-given source name
  YAML::Node root;                               // the whole document
  std::map<std::string, std::string> overrides;  // paths created or replaced by --set -> "--set k=v"
};

namespace {

size_t levenshtein(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string join(const std::vector<std::string>& words, const char* separator) {
  std::string out;
  for (const auto& word : words) out += (out.empty() ? "" : separator) + word;
  return out;
}

// Where `path` came from: the --set that created it (or an ancestor), else the mark, else the file.
std::string location(const YamlDocument::State& state, std::string path, const YAML::Mark& mark) {
  while (true) {
    if (auto it = state.overrides.find(path); it != state.overrides.end()) return it->second;
    const auto dot = path.rfind('.');
    if (dot == std::string::npos) break;
    path.resize(dot);
  }
  if (mark.is_null()) return state.name;
  return fmt::format("{}:{}:{}", state.name, mark.line + 1, mark.column + 1);
}

bool is_quoted(const YAML::Node& node) { return node.Tag() == "!"; }

template <class T>
std::optional<T> parse_number(const std::string& text) {
  const char* begin = text.data();
  const char* end = begin + text.size();
  if (begin != end && *begin == '+') ++begin;
  T value{};
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end || begin == end) return std::nullopt;
  return value;
}

// How a value looks in a "got ..." message.
std::string describe(const YAML::Node& node) {
  if (node.IsNull()) return "null";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  if (is_quoted(node)) return fmt::format("the string \"{}\"", node.Scalar());
  if (parse_number<double>(node.Scalar())) return node.Scalar();
  return fmt::format("\"{}\"", node.Scalar());
}

// `with_position`: a file (name:line:col) rather than a one-line --set value (name only).
YAML::Node parse_text(const std::string& text, const std::string& name, bool with_position) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    if (!with_position) LT_FAIL("{}: invalid YAML value: {}", name, e.msg);
    LT_FAIL("{}:{}:{}: invalid YAML: {}", name, e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    LT_FAIL("{}: invalid YAML: {}", name, e.what());
  }
}

}  // namespace

std::optional<std::string> did_you_mean(const std::string& word,
                                        const std::vector<std::string>& candidates) {
  std::optional<std::string> best;
  size_t best_score = 0;  // edit distance, or 3 for a prefix match
  for (const auto& candidate : candidates) {
    size_t score = levenshtein(word, candidate);
    if (score > 2 || score >= candidate.size()) {
      const bool prefix = (word.size() >= 2 && candidate.starts_with(word)) ||
                          (candidate.size() >= 2 && word.starts_with(candidate));
      if (!prefix) continue;
      score = 3;
    }
    if (!best || score < best_score) {
      best = candidate;
      best_score = score;
    }
  }
  return best;
}

// ---- YamlDocument ----

YamlDocument YamlDocument::from_file(const std::string& path) {
  std::ifstream in(path);
  LT_CHECK(in.good(), "{}: cannot open job config file (missing or unreadable)", path);
  std::stringstream text;
  text << in.rdbuf();
  return from_string(text.str(), path);
}

YamlDocument YamlDocument::from_string(const std::string& text, const std::string& source_name) {
  auto state = std::make_shared<State>();
  state->name = source_name;
  state->root = parse_text(text, source_name, true);
  return YamlDocument(std::move(state));
}

const std::string& YamlDocument::source_name() const { return state_->name; }

void YamlDocument::apply_overrides(const std::vector<std::string>& overrides) {
  State& state = *state_;
  for (const auto& text : overrides) {
    const std::string origin = "--set " + text;
    const auto eq = text.find('=');
    LT_CHECK(eq != std::string::npos && eq > 0, "{}: expected section.key=value", origin);
    const std::string key = text.substr(0, eq);
    const std::string value_text = text.substr(eq + 1);
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      const auto dot = key.find('.', start);
      parts.push_back(key.substr(start, dot == std::string::npos ? dot : dot - start));
      LT_CHECK(!parts.back().empty(), "{}: empty component in key '{}'", origin, key);
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    YAML::Node value = value_text.empty() ? YAML::Node(std::string()) : parse_text(value_text, origin, false);

    if (state.root.IsNull()) state.root.reset(YAML::Node(YAML::NodeType::Map));
    LT_CHECK(state.root.IsMap(), "{}: the document is not a mapping", origin);
    YAML::Node current(state.root);
    std::string path;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      path += (i ? "." : "") + parts[i];
      YAML::Node child = current[parts[i]];
      if (!child.IsDefined() || child.IsNull()) {
        current[parts[i]] = YAML::Node(YAML::NodeType::Map);
        child.reset(current[parts[i]]);
        state.overrides[path] = origin;
      }
      LT_CHECK(child.IsMap(), "{}: '{}' is not a section (it holds {})", origin, path,
               describe(child));
      current.reset(child);
    }
    current[parts.back()] = value;
    // Anything an earlier --set put below this key was just replaced.
    for (auto it = state.overrides.lower_bound(key + "."); it != state.overrides.end() &&
                                                           it->first.starts_with(key + ".");) {
      it = state.overrides.erase(it);
    }
    state.overrides[key] = origin;
  }
}

// ---- YamlSection ----

struct YamlSection::Impl {
  std::shared_ptr<YamlDocument::State> doc;
  YAML::Node node;                // a mapping, or null for an absent/empty section
  std::string prefix;             // dotted path of this section; "" for the root
  YAML::Mark mark;                // where this section's key is
  std::vector<std::string> known; // keys asked for so far
  OriginMap* origins = nullptr;

  struct Entry {
    YAML::Node key, value;
  };
  std::optional<Entry> find(const std::string& key) const {
    if (!node.IsMap()) return std::nullopt;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it->first.IsScalar() && it->first.Scalar() == key) return Entry{it->first, it->second};
    }
    return std::nullopt;
  }
  std::string path(const std::string& key) const { return prefix.empty() ? key : prefix + "." + key; }
  std::string where(const std::string& key, const Entry& entry) const {
    // A null value has no token of its own: its mark points past it, so use the key's.
    const YAML::Mark& m = entry.value.IsNull() ? entry.key.Mark() : entry.value.Mark();
    return location(*doc, path(key), m);
  }
  // Marks `key` known and returns its entry; records where it came from.
  std::optional<Entry> take(const std::string& key) {
    if (std::find(known.begin(), known.end(), key) == known.end()) known.push_back(key);
    auto entry = find(key);
    if (entry && origins) (*origins)[path(key)] = where(key, *entry);
    return entry;
  }
  [[noreturn]] void type_error(const std::string& key, const Entry& entry, const char* expected) const {
    const std::string& s = entry.value.Scalar();
    const bool looks_typed = parse_number<double>(s) || s == "true" || s == "false";
    const std::string hint = is_quoted(entry.value) && looks_typed ? " (remove the quotes)" : "";
    LT_FAIL("{}: {}: expected {}, got {}{}", where(key, entry), path(key), expected,
            describe(entry.value), hint);
  }
};

YamlSection::YamlSection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
YamlSection::~YamlSection() = default;
YamlSection::YamlSection(YamlSection&&) noexcept = default;
YamlSection& YamlSection::operator=(YamlSection&&) noexcept = default;

YamlSection::YamlSection(const YamlDocument& document, OriginMap* origins)
    : impl_(std::make_unique<Impl>()) {
  impl_->doc = document.state_;
  impl_->node = document.state_->root;
  impl_->mark = YAML::Mark::null_mark();
  impl_->origins = origins;
  const YAML::Node& root = impl_->node;
  LT_CHECK(root.IsNull() || root.IsMap(), "{}: expected a mapping of sections at the top level, got {}",
           location(*impl_->doc, "", root.Mark()), describe(root));
}

std::string YamlSection::path(const std::string& key) const { return impl_->path(key); }

bool YamlSection::has(const std::string& key) const { return impl_->find(key).has_value(); }

void YamlSection::fail(const std::string& key, const std::string& message) const {
  const auto entry = impl_->find(key);
  const std::string where =
      entry ? impl_->where(key, *entry) : location(*impl_->doc, impl_->prefix, impl_->mark);
  LT_FAIL("{}: {}: {}", where, path(key), message);
}

YamlSection YamlSection::section(const std::string& key) {
  auto entry = impl_->take(key);
  auto sub = std::make_unique<Impl>();
  sub->doc = impl_->doc;
  sub->prefix = path(key);
  sub->mark = entry ? entry->key.Mark() : impl_->mark;
  sub->origins = impl_->origins;
  // A section is located at its key, where keys missing from it are reported.
  if (entry && sub->origins) (*sub->origins)[sub->prefix] = location(*sub->doc, sub->prefix, sub->mark);
  if (entry && !entry->value.IsNull()) {
    if (!entry->value.IsMap()) impl_->type_error(key, *entry, "a mapping");
    sub->node = entry->value;
  }
  return YamlSection(std::move(sub));
}

void YamlSection::read(const std::string& key, std::string& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  if (!entry->value.IsScalar()) impl_->type_error(key, *entry, "a string");
  out = entry->value.Scalar();
}

void YamlSection::read(const std::string& key, bool& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  const YAML::Node& v = entry->value;
  if (v.IsScalar() && !is_quoted(v)) {
    const std::string& s = v.Scalar();
    if (s == "true" || s == "True" || s == "TRUE") return void(out = true);
    if (s == "false" || s == "False" || s == "FALSE") return void(out = false);
  }
  impl_->type_error(key, *entry, "true or false");
}

void YamlSection::read(const std::string& key, int64_t& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  const YAML::Node& v = entry->value;
  if (v.IsScalar() && !is_quoted(v)) {
    if (auto value = parse_number<int64_t>(v.Scalar())) return void(out = *value);
  }
  impl_->type_error(key, *entry, "an integer");
}

void YamlSection::read(const std::string& key, uint64_t& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  const YAML::Node& v = entry->value;
  if (v.IsScalar() && !is_quoted(v)) {
    if (auto value = parse_number<uint64_t>(v.Scalar())) return void(out = *value);
  }
  impl_->type_error(key, *entry, "a non-negative integer");
}

void YamlSection::read(const std::string& key, double& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  const YAML::Node& v = entry->value;
  if (v.IsScalar() && !is_quoted(v)) {
    if (auto value = parse_number<double>(v.Scalar()); value && std::isfinite(*value)) {
      return void(out = *value);
    }
  }
  impl_->type_error(key, *entry, "a finite number");
}

template <class T>
static void read_optional(YamlSection& section, const std::string& key, std::optional<T>& out,
                          bool is_null) {
  if (is_null) return void(out.reset());
  T value = out.value_or(T{});
  section.read(key, value);
  out = value;
}

void YamlSection::read(const std::string& key, std::optional<int64_t>& out) {
  auto entry = impl_->take(key);
  if (entry) read_optional(*this, key, out, entry->value.IsNull());
}
void YamlSection::read(const std::string& key, std::optional<double>& out) {
  auto entry = impl_->take(key);
  if (entry) read_optional(*this, key, out, entry->value.IsNull());
}
void YamlSection::read(const std::string& key, std::optional<bool>& out) {
  auto entry = impl_->take(key);
  if (entry) read_optional(*this, key, out, entry->value.IsNull());
}

void YamlSection::read(const std::string& key, std::vector<int64_t>& out) {
  auto entry = impl_->take(key);
  if (!entry) return;
  if (!entry->value.IsSequence()) impl_->type_error(key, *entry, "a list of integers");
  std::vector<int64_t> values;
  for (size_t i = 0; i < entry->value.size(); ++i) {
    const YAML::Node item = entry->value[i];
    std::optional<int64_t> value;
    if (item.IsScalar() && !is_quoted(item)) value = parse_number<int64_t>(item.Scalar());
    if (!value) {
      LT_FAIL("{}: {}[{}]: expected an integer, got {}", location(*impl_->doc, path(key), item.Mark()),
              path(key), i, describe(item));
    }
    values.push_back(*value);
  }
  out = std::move(values);
}

void YamlSection::read_choice(const std::string& key, std::string& out,
                              const std::vector<std::string>& choices) {
  std::string value = out;
  read(key, value);
  if (std::find(choices.begin(), choices.end(), value) == choices.end()) {
    const auto suggestion = did_you_mean(value, choices);
    fail(key, fmt::format("expected one of {}; got \"{}\"{}", join(choices, ", "), value,
                          suggestion ? fmt::format(" (did you mean '{}'?)", *suggestion) : ""));
  }
  out = value;
}

void YamlSection::finish() const {
  const YAML::Node& node = impl_->node;
  if (!node.IsMap()) return;
  std::set<std::string> seen;
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;  // a copy: it->first lives in a temporary proxy
    const std::string where = location(*impl_->doc, impl_->prefix, key.Mark());
    LT_CHECK(key.IsScalar(), "{}: expected a key name in '{}', got {}", where,
             impl_->prefix.empty() ? "<top level>" : impl_->prefix, describe(key));
    const std::string name = key.Scalar();
    const std::string full = path(name);
    const std::string key_where = location(*impl_->doc, full, key.Mark());
    LT_CHECK(seen.insert(name).second, "{}: duplicate key '{}'", key_where, full);
    if (std::find(impl_->known.begin(), impl_->known.end(), name) != impl_->known.end()) continue;
    if (auto suggestion = did_you_mean(name, impl_->known)) {
      LT_FAIL("{}: unknown key '{}' (did you mean '{}'?)", key_where, full, *suggestion);
    }
    LT_FAIL("{}: unknown key '{}' (known keys: {})", key_where, full, join(impl_->known, ", "));
  }
}

}  // namespace longtune::config
