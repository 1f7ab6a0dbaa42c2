// prepare-data's per-source stage: one book (.txt) or JSONL file tokenized into its own part file
// (a token shard under <out>/.parts/), or the part an interrupted run left behind reused, together
// with what became of the source (documents, tokens, a skip reason, bad JSONL lines). A part's name
// hashes the tokenizer, the options and the source's stat, so a changed source or setting never
// picks up a stale part. Internal to prepare-data (data/prepare.cpp); not the grouping of sources
// into shards, the shard files, .progress.json or the manifest.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "data/prepared_data.h"
#include "data/text_source.h"
#include "data/token_shard.h"

namespace longtune::data {

struct PrepareOptions;
class Tokenizer;

// What became of one source in this run.
struct SourceOutcome {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  bool reused = false;
  std::string skip_reason;  // non-empty: skipped (whole source)
  bool retry_later = false;
  std::vector<SkippedRecord> bad_records;  // JSONL lines that were not documents
};

// Tallies over the whole run: updated by the workers, read by the progress line and the summary.
struct PrepareCounters {
  std::atomic<uint64_t> sources_done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> tokens_done{0};
  std::atomic<uint64_t> bytes_tokenized{0};
  std::atomic<uint64_t> tokens_tokenized{0};
};

// Makes the part file of each source, and runs the worker threads that do it.
class PartMaker {
 public:
  PartMaker(const PrepareOptions& options, const Tokenizer& tokenizer, TokenWidth width, int threads);

  std::filesystem::path part_path(const std::filesystem::path& parts_dir, const SourceFile& source) const;
  // The settings a part or shard depends on besides its sources: tokenizer, max_line_bytes, width.
  std::string settings_material() const;

  // A book (.txt): one document, tokenized into its own part file.
  SourceOutcome process_text(const SourceFile& source, const std::filesystem::path& part);
  // A JSONL file: many documents, read in order and tokenized in parallel batches.
  SourceOutcome process_jsonl(const SourceFile& source, const std::filesystem::path& part);

  // Runs body(i) for i in [0, n) on the worker threads; rethrows the first exception.
  void parallel_for(size_t n, const std::function<void(size_t)>& body);

  PrepareCounters& counters() { return counters_; }

 private:
  std::optional<SourceOutcome> reuse_part(const std::filesystem::path& part);

  const PrepareOptions& options_;
  const Tokenizer& tokenizer_;
  TokenWidth width_;
  int threads_;
  PrepareCounters counters_;
};

}  // namespace longtune::data
