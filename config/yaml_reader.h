// Typed, strict reading of a YAML mapping over yaml-cpp: every error names `file:line:column` (or
// the `--set` override that put the value there) and the dotted key; unknown keys are reported
// with a did-you-mean suggestion. Knows nothing about the job schema (config/job_config.h does);
// yaml-cpp types stay out of this header (the nodes live behind pimpls in yaml_reader.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace longtune::config {

// Dotted key path -> where its value came from ("configs/x.yaml:12:5" or "--set optim.lr=3").
using OriginMap = std::map<std::string, std::string>;

// The closest candidate to `word` (Levenshtein distance <= 2, or one a prefix of the other), if any.
std::optional<std::string> did_you_mean(const std::string& word,
                                        const std::vector<std::string>& candidates);

// A parsed YAML document plus where it came from. Syntax errors and missing files throw
// longtune::Error naming the file (and line:column, 1-based).
class YamlDocument {
 public:
  static YamlDocument from_file(const std::string& path);
  static YamlDocument from_string(const std::string& text, const std::string& source_name);

  // Applies `section.key=value` overrides (nested: `model.rope_scaling.factor=4`) to the tree. The
  // value is parsed as YAML (`4`, `true`, `[1, 2]`); an empty value is the empty string.
  void apply_overrides(const std::vector<std::string>& overrides);

  const std::string& source_name() const;

  // Shared between the document and its sections.
  struct State;

 private:
  explicit YamlDocument(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
  friend class YamlSection;
};

// One mapping of the document (the root or a nested section). Each read_* marks its key as known;
// finish() then rejects every key that no read asked for. A missing key leaves `out` unchanged
// (the default); an explicit `null` resets an optional and is an error elsewhere.
class YamlSection {
 public:
  // The root mapping; records the origin of each key it reads into `origins` (may be null).
  YamlSection(const YamlDocument& document, OriginMap* origins);
  ~YamlSection();
  YamlSection(YamlSection&&) noexcept;
  YamlSection& operator=(YamlSection&&) noexcept;

  // A nested mapping; absent or null gives an empty section.
  YamlSection section(const std::string& key);
  bool has(const std::string& key) const;

  void read(const std::string& key, std::string& out);
  void read(const std::string& key, bool& out);
  void read(const std::string& key, int64_t& out);
  void read(const std::string& key, uint64_t& out);
  void read(const std::string& key, double& out);
  void read(const std::string& key, std::optional<int64_t>& out);
  void read(const std::string& key, std::optional<double>& out);
  void read(const std::string& key, std::optional<bool>& out);
  void read(const std::string& key, std::vector<int64_t>& out);
  // A string that must be one of `choices`; leaves `out` unchanged when the key is absent.
  void read_choice(const std::string& key, std::string& out, const std::vector<std::string>& choices);

  // Throws if the mapping holds a key no read asked for (or a key twice).
  void finish() const;

  // "optim" + "lr" -> "optim.lr".
  std::string path(const std::string& key) const;
  // Throws "<where key is>: <path>: <message>".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  struct Impl;
  explicit YamlSection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace longtune::config
