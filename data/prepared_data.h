// A prepared-data directory as written by prepare-data: manifest.json (the completeness marker,
// written last) plus <split>/shard-NNNNN.bin token shards. This file holds the manifest's typed form
// and its JSON, and PreparedSplit, the on-disk documents of one split that training and eval read.
// Not the preparation itself (data/prepare.h).
//
// manifest.json:
//   {"format": "longtune.prepared-tokens", "version": 1, "input": ROOT, "input_kind": "pg19"|...,
//    "tokenizer": {"path", "sha256", "vocab_size", "bos_id", "eos_id"}, "token_width": "uint16"|"uint32",
//    "max_line_bytes": N, "splits": {NAME: {"documents", "tokens",
//      "shards": [{"file", "bytes", "sha256", "documents", "tokens", "key"}],
//      "sources": [{"path", "bytes", "mtime_ns", "documents", "tokens", "title"?, "shard"}],
//      "skipped": [{"path", "reason"}]}}}
// A split's documents are its sources' documents in source order, laid out over its shards in order.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/documents.h"
#include "data/token_shard.h"

namespace longtune::data {

inline constexpr const char* kManifestFormat = "longtune.prepared-tokens";
inline constexpr int kManifestVersion = 1;
inline constexpr const char* kManifestFileName = "manifest.json";  // written last: the directory is complete

struct TokenizerInfo {
  std::string path;
  std::string sha256;
  int64_t vocab_size = 0;
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  bool operator==(const TokenizerInfo&) const = default;
};

struct ShardRecord {
  std::string file;  // relative to the prepared directory
  uint64_t bytes = 0;
  std::string sha256;
  uint64_t documents = 0;
  uint64_t tokens = 0;
  std::string key;  // identifies the inputs the shard was made from (sources, stats, tokenizer)
  bool operator==(const ShardRecord&) const = default;
};

struct SourceRecord {
  std::string path;  // relative to the input root
  uint64_t bytes = 0;
  int64_t mtime_ns = 0;
  uint64_t documents = 0;
  uint64_t tokens = 0;
  std::string title;
  int64_t shard = 0;
  bool operator==(const SourceRecord&) const = default;
};

struct SkippedRecord {
  std::string path;
  std::string reason;
  bool operator==(const SkippedRecord&) const = default;
};

struct SplitRecord {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  std::vector<ShardRecord> shards;
  std::vector<SourceRecord> sources;
  std::vector<SkippedRecord> skipped;
  bool operator==(const SplitRecord&) const = default;
};

struct Manifest {
  std::string input;
  std::string input_kind;
  TokenizerInfo tokenizer;
  TokenWidth token_width = TokenWidth::kUInt16;
  uint64_t max_line_bytes = 0;
  std::map<std::string, SplitRecord> splits;

  std::string to_json() const;  // deterministic: same manifest, same bytes
  // Throws longtune::Error naming `source` and the key on a malformed or foreign manifest.
  static Manifest from_json(const std::string& text, const std::string& source);
  bool operator==(const Manifest&) const = default;
};

// Reads <dir>/manifest.json; throws longtune::Error if absent ("not prepared or unfinished").
Manifest read_manifest(const std::filesystem::path& dir);

// The documents of one split, memory-mapped from its shards, checked against the manifest.
class PreparedSplit final : public TokenDocuments {
 public:
  // `path` is a prepared directory (then `split` picks the split; empty: "train") or a split folder
  // inside one (dir/<split>, which names the split itself; `split` is then ignored). If `expected_tokenizer_sha256` is non-empty, a different tokenizer is
  // an error naming both. `verify_checksums` rehashes every shard (slow; off by default).
  PreparedSplit(const std::filesystem::path& path, const std::string& split = "",
                const std::string& expected_tokenizer_sha256 = "", bool verify_checksums = false);
  ~PreparedSplit() override;

  uint64_t num_documents() const override { return doc_shard_.size(); }
  uint64_t document_length(uint64_t doc) const override;
  void copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const override;
  uint64_t total_tokens() const override { return record_.tokens; }

  const Manifest& manifest() const { return manifest_; }
  const SplitRecord& record() const { return record_; }
  const std::string& split_name() const { return split_; }
  const std::filesystem::path& directory() const { return directory_; }
  int64_t bos_id() const { return manifest_.tokenizer.bos_id; }
  int64_t eos_id() const { return manifest_.tokenizer.eos_id; }

 private:
  std::filesystem::path directory_;
  std::string split_;
  Manifest manifest_;
  SplitRecord record_;
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<uint32_t> doc_shard_;        // document -> shard
  std::vector<uint64_t> doc_in_shard_;     // document -> index inside its shard
};

}  // namespace longtune::data
