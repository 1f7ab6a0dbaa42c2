// prepare-data: tokenize a corpus once into a prepared-data directory (data/prepared_data.h).
// Sources are grouped, in sorted order, into shards of about `shard_source_bytes` of text each, so
// the output depends only on the inputs and the tokenizer, never on thread timing. Each finished
// book is kept as a part file until its shard is written, finished shards are recorded in
// .progress.json, and manifest.json is written last: a rerun skips whatever is done, and a run
// killed at any moment and rerun gives byte-identical output. Not the reading (packed_reader.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace longtune::data {

struct PrepareOptions {
  std::filesystem::path input;      // PG-19 root, folder of .txt, one .txt, or .jsonl[.zst]
  std::filesystem::path tokenizer;  // SentencePiece model
  std::filesystem::path output;     // prepared-data directory (created)
  int threads = 0;                  // 0: all cores
  std::vector<std::string> splits;  // PG-19 splits to prepare (empty: all present)
  std::string split_name = "train"; // the split name for non-PG-19 inputs
  uint64_t max_line_bytes = 1 << 20;
  uint64_t shard_source_bytes = 256ull << 20;  // text bytes per shard (a larger source gets its own)
  bool progress = true;
};

struct SplitSummary {
  uint64_t sources = 0;          // books / JSONL files seen
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t skipped = 0;          // sources skipped (see the manifest's "skipped" for reasons)
  uint64_t shards = 0;
  uint64_t shards_reused = 0;    // already complete from an earlier run
  uint64_t sources_reused = 0;   // books whose tokens an interrupted run had already made
};

struct PrepareSummary {
  std::map<std::string, SplitSummary> splits;
  uint64_t bytes_tokenized = 0;  // text bytes tokenized in this run (reused work excluded)
  uint64_t tokens_tokenized = 0;
  double seconds = 0;
  int threads = 0;
};

// Throws longtune::Error for what must stop the run (missing input, a tokenizer that does not
// match the existing output, I/O failures on the output); bad books are skipped with a warning.
PrepareSummary prepare_data(const PrepareOptions& options);

}  // namespace longtune::data
