#include "data/prepared_data.h"

#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/log.h"
#include "common/json_value.h"
#include "common/file_io.h"

namespace longtune::data {
namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

template <typename T>
T get_key(const ordered_json& object, const char* key, const std::string& where) {
  LT_CHECK(object.is_object(), "{}: expected an object", where);
  const auto it = object.find(key);
  LT_CHECK(it != object.end(), "{}: missing key '{}'", where, key);
  try {
    return json_value<T>(*it, fmt::format("{}.{}", where, key));
  } catch (const nlohmann::json::exception& e) {
    LT_FAIL("{}.{}: wrong type: {}", where, key, e.what());
  }
}

TokenWidth parse_width(const std::string& name, const std::string& where) {
  if (name == "uint16") return TokenWidth::kUInt16;
  if (name == "uint32") return TokenWidth::kUInt32;
  LT_FAIL("{}.token_width: '{}' is neither uint16 nor uint32", where, name);
}

}  // namespace

std::string Manifest::to_json() const {
  ordered_json root;
  root["format"] = kManifestFormat;
  root["version"] = kManifestVersion;
  root["input"] = input;
  root["input_kind"] = input_kind;
  root["tokenizer"] = {{"path", tokenizer.path},
                       {"sha256", tokenizer.sha256},
                       {"vocab_size", tokenizer.vocab_size},
                       {"bos_id", tokenizer.bos_id},
                       {"eos_id", tokenizer.eos_id}};
  root["token_width"] = to_string(token_width);
  root["max_line_bytes"] = max_line_bytes;
  ordered_json splits_json = ordered_json::object();
  for (const auto& [name, split] : splits) {
    ordered_json shards = ordered_json::array();
    for (const ShardRecord& shard : split.shards)
      shards.push_back({{"file", shard.file}, {"bytes", shard.bytes}, {"sha256", shard.sha256},
                        {"documents", shard.documents}, {"tokens", shard.tokens}, {"key", shard.key}});
    ordered_json sources = ordered_json::array();
    for (const SourceRecord& source : split.sources) {
      ordered_json entry = {{"path", source.path}, {"bytes", source.bytes}, {"mtime_ns", source.mtime_ns},
                            {"documents", source.documents}, {"tokens", source.tokens}};
      if (!source.title.empty()) entry["title"] = source.title;
      entry["shard"] = source.shard;
      sources.push_back(std::move(entry));
    }
    ordered_json skipped = ordered_json::array();
    for (const SkippedRecord& skip : split.skipped)
      skipped.push_back({{"path", skip.path}, {"reason", skip.reason}});
    splits_json[name] = {{"documents", split.documents}, {"tokens", split.tokens}, {"shards", shards},
                         {"sources", sources}, {"skipped", skipped}};
  }
  root["splits"] = splits_json;
  return root.dump(1) + "\n";
}

Manifest Manifest::from_json(const std::string& text, const std::string& source) {
  ordered_json root = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  LT_CHECK(!root.is_discarded() && root.is_object(), "{}: not a JSON object", source);
  const std::string format = get_key<std::string>(root, "format", source);
  LT_CHECK(format == kManifestFormat, "{}: format '{}' is not {}", source, format, kManifestFormat);
  const int version = get_key<int>(root, "version", source);
  LT_CHECK(version == kManifestVersion, "{}: version {} is not supported (this build reads {})", source,
           version, kManifestVersion);
  Manifest manifest;
  manifest.input = get_key<std::string>(root, "input", source);
  manifest.input_kind = get_key<std::string>(root, "input_kind", source);
  const std::string tok = source + ".tokenizer";
  const ordered_json& tokenizer = root["tokenizer"];
  manifest.tokenizer.path = get_key<std::string>(tokenizer, "path", tok);
  manifest.tokenizer.sha256 = get_key<std::string>(tokenizer, "sha256", tok);
  manifest.tokenizer.vocab_size = get_key<int64_t>(tokenizer, "vocab_size", tok);
  manifest.tokenizer.bos_id = get_key<int64_t>(tokenizer, "bos_id", tok);
  manifest.tokenizer.eos_id = get_key<int64_t>(tokenizer, "eos_id", tok);
  manifest.token_width = parse_width(get_key<std::string>(root, "token_width", source), source);
  manifest.max_line_bytes = get_key<uint64_t>(root, "max_line_bytes", source);
  const auto splits = get_key<ordered_json>(root, "splits", source);
  LT_CHECK(splits.is_object(), "{}.splits: expected an object", source);
  for (const auto& [name, value] : splits.items()) {
    const std::string where = source + ".splits." + name;
    SplitRecord split;
    split.documents = get_key<uint64_t>(value, "documents", where);
    split.tokens = get_key<uint64_t>(value, "tokens", where);
    for (const auto& shard : get_key<ordered_json>(value, "shards", where)) {
      const std::string at = where + ".shards[]";
      split.shards.push_back({get_key<std::string>(shard, "file", at), get_key<uint64_t>(shard, "bytes", at),
                              get_key<std::string>(shard, "sha256", at), get_key<uint64_t>(shard, "documents", at),
                              get_key<uint64_t>(shard, "tokens", at), get_key<std::string>(shard, "key", at)});
    }
    for (const auto& entry : get_key<ordered_json>(value, "sources", where)) {
      const std::string at = where + ".sources[]";
      SourceRecord record;
      record.path = get_key<std::string>(entry, "path", at);
      record.bytes = get_key<uint64_t>(entry, "bytes", at);
      record.mtime_ns = get_key<int64_t>(entry, "mtime_ns", at);
      record.documents = get_key<uint64_t>(entry, "documents", at);
      record.tokens = get_key<uint64_t>(entry, "tokens", at);
      if (entry.contains("title")) record.title = get_key<std::string>(entry, "title", at);
      record.shard = get_key<int64_t>(entry, "shard", at);
      split.sources.push_back(std::move(record));
    }
    for (const auto& entry : get_key<ordered_json>(value, "skipped", where))
      split.skipped.push_back({get_key<std::string>(entry, "path", where + ".skipped[]"),
                               get_key<std::string>(entry, "reason", where + ".skipped[]")});
    manifest.splits[name] = std::move(split);
  }
  return manifest;
}

Manifest read_manifest(const fs::path& dir) {
  const fs::path path = dir / kManifestFileName;
  LT_CHECK(fs::is_regular_file(path),
           "{}: not a prepared-data directory (no manifest.json); run `longtune prepare-data`, or rerun "
           "it if it was interrupted", dir.string());
  return Manifest::from_json(read_file(path), path.string());
}

PreparedSplit::PreparedSplit(const fs::path& path, const std::string& split,
                             const std::string& expected_tokenizer_sha256, bool verify_checksums) {
  if (fs::is_regular_file(path / kManifestFileName)) {
    directory_ = path;
    split_ = split.empty() ? "train" : split;
  } else if (path.has_parent_path() && fs::is_regular_file(path.parent_path() / kManifestFileName)) {
    directory_ = path.parent_path();
    split_ = path.filename().string();  // a split folder names its split; `split` is only a default
  } else {
    directory_ = path;  // read_manifest reports it
  }
  manifest_ = read_manifest(directory_);
  const auto found = manifest_.splits.find(split_);
  if (found == manifest_.splits.end()) {
    std::string available;
    for (const auto& [name, unused] : manifest_.splits) available += (available.empty() ? "" : ", ") + name;
    LT_FAIL("{}: has no split '{}' (it has: {})", directory_.string(), split_, available);
  }
  record_ = found->second;
  if (!expected_tokenizer_sha256.empty() && manifest_.tokenizer.sha256.empty())
    LT_WARN("{}: imported without a tokenizer, so the job's tokenizer cannot be checked against it; "
            "import-tokens --tokenizer records it", directory_.string());
  else if (!expected_tokenizer_sha256.empty())
    LT_CHECK(manifest_.tokenizer.sha256 == expected_tokenizer_sha256,
             "{}: prepared with tokenizer {} (sha256 {}), but the job's tokenizer has sha256 {}; "
             "rerun prepare-data with the job's tokenizer", directory_.string(), manifest_.tokenizer.path,
             manifest_.tokenizer.sha256, expected_tokenizer_sha256);
  uint64_t documents = 0, tokens = 0;
  for (const ShardRecord& shard_record : record_.shards) {
    const fs::path shard_path = directory_ / shard_record.file;
    auto shard = std::make_unique<TokenShard>(shard_path);
    LT_CHECK(shard->width() == manifest_.token_width && shard->doc_count() == shard_record.documents &&
                 shard->token_count() == shard_record.tokens,
             "{}: disagrees with manifest.json ({} documents / {} tokens there, {} / {} in the file)",
             shard_path.string(), shard_record.documents, shard_record.tokens, shard->doc_count(),
             shard->token_count());
    if (verify_checksums)
      LT_CHECK(sha256_file(shard_path) == shard_record.sha256, "{}: sha256 differs from manifest.json "
               "(damaged file); rerun prepare-data", shard_path.string());
    for (uint64_t d = 0; d < shard->doc_count(); ++d) {
      doc_shard_.push_back(static_cast<uint32_t>(shards_.size()));
      doc_in_shard_.push_back(d);
    }
    documents += shard->doc_count();
    tokens += shard->token_count();
    shards_.push_back(std::move(shard));
  }
  LT_CHECK(documents == record_.documents && tokens == record_.tokens,
           "{}: split {} totals ({} documents, {} tokens) disagree with its shards ({}, {})",
           directory_.string(), split_, record_.documents, record_.tokens, documents, tokens);
}

PreparedSplit::~PreparedSplit() = default;

uint64_t PreparedSplit::document_length(uint64_t doc) const {
  LT_CHECK(doc < doc_shard_.size(), "document {} out of range ({} documents)", doc, doc_shard_.size());
  return shards_[doc_shard_[doc]]->document_length(doc_in_shard_[doc]);
}

void PreparedSplit::copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const {
  LT_CHECK(doc < doc_shard_.size(), "document {} out of range ({} documents)", doc, doc_shard_.size());
  shards_[doc_shard_[doc]]->copy_tokens(doc_in_shard_[doc], begin, count, out);
}

}  // namespace longtune::data
