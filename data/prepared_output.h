// The writing side of a prepared-data directory, shared by prepare-data (data/prepare.h) and
// import-tokens (data/import_tokens.h): what an earlier run left there (its manifest, else its
// progress record), leftovers of killed writes, progress recorded after each shard, the keys that
// let a rerun keep a finished shard, and manifest.json written last as the completeness marker.
// Not the formats (data/prepared_data.h, data/token_shard.h) and not the reading side.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "data/prepared_data.h"
#include "data/text_source.h"

namespace longtune::data {

// The first 32 hex digits of the SHA-256 of `material`: part file names and shard keys.
std::string short_hash(const std::string& material);

// A source as far as a key goes: path, size, mtime and readability, not its content.
std::string source_material(const SourceFile& source);

// Creates `out` and returns the records of an earlier run there (.progress.json, the newer if both
// exist, else manifest.json; an unreadable one is warned about and ignored). A run whose vocabulary differs (another tokenizer
// sha256, or another vocab_size / BOS / EOS) is refused, naming `out`, before anything there is
// touched; leftovers of killed atomic writes are removed.
std::optional<Manifest> open_prepared_output(const std::filesystem::path& out, const TokenizerInfo& vocabulary);

// Throws longtune::Error unless `name` can be a split's folder: letters, digits, '_', '-' and '.',
// not starting with '.' (so never "." or "..", which would put shards outside the directory).
void check_split_name(const std::string& name);

// Before the first shard a run changes: manifest.json goes (the run's records live in memory and
// in .progress.json after each shard), so a run killed from here on leaves no manifest that claims
// shards it has rewritten.
void retire_manifest(const std::filesystem::path& out);

// Removes leftovers of AtomicFile writes killed before their rename in `dir`.
void remove_stale_temp_files(const std::filesystem::path& dir);

// The shard `file` of the earlier run's `split` if its key is `key` and it still has its recorded
// size: a finished shard a rerun keeps as it is.
const ShardRecord* reusable_shard(const std::filesystem::path& out, const SplitRecord* earlier,
                                  const std::string& file, const std::string& key);

// Records the run's state so far (the manifest without its last word) after each new shard.
void record_progress(const std::filesystem::path& out, const Manifest& state);

// Removes files in `split_dir` that are not shards of `record` (an earlier, larger input's).
void remove_stale_shards(const std::filesystem::path& split_dir, const SplitRecord& record);

// Writes manifest.json (left alone when unchanged, so a rerun on the same input touches no file)
// and then drops the progress record it replaces.
void write_manifest(const std::filesystem::path& out, const Manifest& manifest);

}  // namespace longtune::data
