// import-tokens: documents someone else already tokenized, turned into a prepared-data directory
// with the same manifest.json and token shards prepare-data writes (data/prepared_data.h), so
// training and evaluation read them as they read prepared text. Inputs:
//   - JSONL, plain or zstd-compressed (.jsonl, .jsonl.zst): one JSON object per line holding the
//     document's ids as "ids" or "input_ids" (an array of non-negative integers). Blank lines are
//     allowed; anything else that is not such a record is an error naming file:line.
//   - A flat token file (.bin) of little-endian uint16 or uint32 ids with a document-offsets file of
//     little-endian uint64 boundaries: N+1 values, the first 0, the last the file's token count,
//     non-decreasing (numpy: np.asarray(bounds, "<u8").tofile(path)).
// Ids are the documents' own, without BOS/EOS (the packer joins documents with them). An id not
// below the declared vocabulary, an empty document or a malformed record stops the import with an
// error naming where it is. Sources are grouped, in sorted order, into shards of about
// `shard_source_bytes` of input each; progress is recorded after each shard and manifest.json is
// written last, so an import killed at any moment and rerun gives byte-identical output.
// Not tokenization (data/prepare.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "data/token_shard.h"

namespace longtune::data {

struct ImportOptions {
  std::vector<std::filesystem::path> inputs;  // JSONL files, folders of them, or one .bin
  std::filesystem::path offsets;              // with a .bin input: its document boundaries
  std::optional<TokenWidth> bin_width;        // with a .bin input: uint16 or uint32 ids
  std::filesystem::path tokenizer;            // optional: vocabulary, BOS/EOS and hash from it
  int64_t vocab_size = 0;                     // without a tokenizer: required (with one: must agree)
  int64_t bos_id = -1;                        // without a tokenizer: required
  int64_t eos_id = -1;
  std::filesystem::path output;
  std::string split_name = "train";
  uint64_t shard_source_bytes = 256ull << 20;  // input bytes per shard (a larger source gets its own)
};

struct ImportSummary {
  uint64_t sources = 0;
  uint64_t documents = 0;
  uint64_t tokens = 0;
  uint64_t shards = 0;
  uint64_t shards_reused = 0;  // finished by an earlier, interrupted run
  uint64_t bytes_read = 0;     // input bytes read in this run (reused shards excluded)
  double seconds = 0;
};

// Throws longtune::Error naming the file (and line or document) for every bad input.
ImportSummary import_tokens(const ImportOptions& options);

}  // namespace longtune::data
