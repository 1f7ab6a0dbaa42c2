#include "data/prepared_output.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <vector>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"

namespace longtune::data {
namespace fs = std::filesystem;

namespace {
constexpr const char* kProgressFile = ".progress.json";
}  // namespace

std::string short_hash(const std::string& material) { return sha256_hex(material).substr(0, 32); }

std::string source_material(const SourceFile& source) {
  return fmt::format("{}\t{}\t{}\t{}\n", source.relative_path, source.bytes, source.mtime_ns,
                     source.readable ? 1 : 0);
}

void remove_stale_temp_files(const fs::path& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, error))
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) stale.push_back(entry.path());
  for (const fs::path& path : stale) fs::remove(path, error);
}

std::optional<Manifest> open_prepared_output(const fs::path& out, const TokenizerInfo& vocabulary) {
  fs::create_directories(out);
  std::optional<Manifest> previous;
  for (const char* name : {kProgressFile, kManifestFileName}) {
    const fs::path path = out / name;
    if (!fs::is_regular_file(path)) continue;
    try {
      previous = Manifest::from_json(read_file(path), path.string());
      break;
    } catch (const Error& e) {
      LT_WARN("{}: unreadable ({}); starting over", path.string(), e.what());
    }
  }
  if (previous) {
    const TokenizerInfo& earlier = previous->tokenizer;
    LT_CHECK(earlier.sha256 == vocabulary.sha256,
             "{}: was prepared with tokenizer {} (sha256 {}), but this run's tokenizer {} has sha256 {}; use "
             "another --out, or delete {} to start over", out.string(), earlier.path.empty() ? "(none)" : earlier.path,
             earlier.sha256.empty() ? "none" : earlier.sha256, vocabulary.path.empty() ? "(none)" : vocabulary.path,
             vocabulary.sha256.empty() ? "none" : vocabulary.sha256, out.string());
    LT_CHECK(earlier.vocab_size == vocabulary.vocab_size && earlier.bos_id == vocabulary.bos_id &&
                 earlier.eos_id == vocabulary.eos_id,
             "{}: was prepared for vocab_size {} (bos {}, eos {}), but this run declares vocab_size {} (bos {}, "
             "eos {}); use another --out, or delete {} to start over", out.string(), earlier.vocab_size,
             earlier.bos_id, earlier.eos_id, vocabulary.vocab_size, vocabulary.bos_id, vocabulary.eos_id,
             out.string());
  }
  remove_stale_temp_files(out);
  return previous;
}

void check_split_name(const std::string& name) {
  const bool allowed = !name.empty() && name.front() != '.' &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
                       });
  LT_CHECK(allowed, "split name \"{}\": use letters, digits, '_', '-' and '.' (not first)", name);
}

void retire_manifest(const fs::path& out) {
  std::error_code error;
  fs::remove(out / kManifestFileName, error);
  LT_CHECK(!error, "{}: cannot remove: {}", (out / kManifestFileName).string(), error.message());
}

const ShardRecord* reusable_shard(const fs::path& out, const SplitRecord* earlier, const std::string& file,
                                  const std::string& key) {
  if (earlier == nullptr) return nullptr;
  for (const ShardRecord& shard : earlier->shards) {
    if (shard.file != file || shard.key != key) continue;
    std::error_code error;
    const fs::path path = out / file;
    if (fs::is_regular_file(path, error) && fs::file_size(path, error) == shard.bytes) return &shard;
  }
  return nullptr;
}

void record_progress(const fs::path& out, const Manifest& state) {
  write_file_atomic(out / kProgressFile, state.to_json());
}

void remove_stale_shards(const fs::path& split_dir, const SplitRecord& record) {
  std::set<std::string> current;
  for (const ShardRecord& shard : record.shards) current.insert(fs::path(shard.file).filename().string());
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(split_dir))
    if (!current.count(entry.path().filename().string())) stale.push_back(entry.path());
  for (const fs::path& path : stale) fs::remove(path);
}

void write_manifest(const fs::path& out, const Manifest& manifest) {
  const std::string manifest_text = manifest.to_json();
  std::error_code ignored;
  if (!fs::is_regular_file(out / kManifestFileName, ignored) || read_file(out / kManifestFileName) != manifest_text)
    write_file_atomic(out / kManifestFileName, manifest_text);
  std::error_code error;
  fs::remove(out / kProgressFile, error);
}

}  // namespace longtune::data
