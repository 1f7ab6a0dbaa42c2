// import-tokens' stages, in the order import_tokens() runs them (data/import_tokens.h): the declared
// vocabulary; the sources (one kind only); the output opened against an earlier run; then the
// sources grouped into shards, each kept if an earlier run finished it or else read, checked and
// written, with progress recorded after each; manifest.json last.
#include "data/import_tokens.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "data/line_reader.h"
#include "data/prepared_data.h"
#include "data/prepared_output.h"
#include "data/tokenizer.h"

namespace longtune::data {
namespace fs = std::filesystem;

namespace {

constexpr const char* kJsonlKind = "token_jsonl";
constexpr const char* kBinKind = "token_bin";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool is_jsonl_name(const std::string& name) { return ends_with(name, ".jsonl") || ends_with(name, ".jsonl.zst"); }

// The vocabulary ids are checked against, from the tokenizer or the declared numbers.
TokenizerInfo declared_vocabulary(const ImportOptions& options) {
  TokenizerInfo info;
  if (!options.tokenizer.empty()) {
    const Tokenizer tokenizer(options.tokenizer);
    info = {fs::absolute(resolve_tokenizer_file(options.tokenizer)).lexically_normal().string(), tokenizer.sha256(),
            tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id()};
    const auto agree = [&](const char* flag, int64_t declared, int64_t from_tokenizer) {
      LT_CHECK(declared < 0 || declared == from_tokenizer, "{} {} disagrees with tokenizer {} ({}); drop the flag",
               flag, declared, options.tokenizer.string(), from_tokenizer);
    };
    agree("--vocab-size", options.vocab_size > 0 ? options.vocab_size : -1, info.vocab_size);
    agree("--bos-id", options.bos_id, info.bos_id);
    agree("--eos-id", options.eos_id, info.eos_id);
    LT_CHECK(info.bos_id >= 0 && info.eos_id >= 0,
             "tokenizer {}: has no BOS/EOS tokens (bos_id {}, eos_id {}); documents are joined with them",
             options.tokenizer.string(), info.bos_id, info.eos_id);
    return info;
  }
  LT_CHECK(options.vocab_size > 0, "import-tokens: give --tokenizer, or --vocab-size with --bos-id and --eos-id");
  LT_CHECK(options.vocab_size <= (int64_t{1} << 31), "--vocab-size {}: ids are stored as 32-bit integers (at most "
           "2^31)", options.vocab_size);
  LT_CHECK(options.bos_id >= 0 && options.bos_id < options.vocab_size && options.eos_id >= 0 &&
               options.eos_id < options.vocab_size,
           "import-tokens: --bos-id ({}) and --eos-id ({}) must be ids of the vocabulary [0, {}); documents are "
           "joined with them", options.bos_id, options.eos_id, options.vocab_size);
  info.vocab_size = options.vocab_size;
  info.bos_id = options.bos_id;
  info.eos_id = options.eos_id;
  return info;
}

struct Sources {
  const char* kind = kJsonlKind;
  fs::path root;  // what relative paths are relative to
  std::vector<SourceFile> files;
};

// The folder every input lies in (an input folder itself counts as one).
fs::path common_root(const std::vector<fs::path>& inputs) {
  std::vector<fs::path> folders;
  for (const fs::path& input : inputs) {
    const fs::path absolute = fs::absolute(input).lexically_normal();
    folders.push_back(fs::is_directory(absolute) ? absolute : absolute.parent_path());
  }
  fs::path root;
  for (const fs::path& part : folders.front()) {
    const fs::path candidate = root / part;
    bool shared = true;
    for (const fs::path& folder : folders) {
      auto [end, _] = std::mismatch(candidate.begin(), candidate.end(), folder.begin(), folder.end());
      shared &= end == candidate.end();
    }
    if (!shared) break;
    root = candidate;
  }
  return root;
}

Sources discover_sources(const ImportOptions& options) {
  LT_CHECK(!options.inputs.empty(), "import-tokens: no --input");
  Sources sources;
  sources.root = common_root(options.inputs);
  for (const fs::path& input : options.inputs) {
    const fs::path absolute = fs::absolute(input).lexically_normal();
    LT_CHECK(fs::exists(absolute), "{}: no such file or folder", input.string());
    if (fs::is_directory(absolute)) {
      size_t found = 0;
      for (const auto& entry : fs::directory_iterator(absolute))
        if (is_jsonl_name(entry.path().filename().string())) {
          sources.files.push_back(stat_source(entry.path(), sources.root, true));
          ++found;
        }
      LT_CHECK(found > 0, "{}: folder holds no .jsonl or .jsonl.zst files", input.string());
    } else if (ends_with(absolute.filename().string(), ".bin")) {
      sources.kind = kBinKind;
      sources.files.push_back(stat_source(absolute, sources.root, false));
    } else {
      LT_CHECK(is_jsonl_name(absolute.filename().string()),
               "{}: not a token input (.jsonl, .jsonl.zst, or .bin with --offsets)", input.string());
      sources.files.push_back(stat_source(absolute, sources.root, true));
    }
  }
  std::sort(sources.files.begin(), sources.files.end(),
            [](const SourceFile& a, const SourceFile& b) { return a.relative_path < b.relative_path; });
  for (size_t i = 0; i < sources.files.size(); ++i) {
    const SourceFile& file = sources.files[i];
    LT_CHECK(file.readable, "{}: unreadable (missing, not a regular file, or no read permission)", file.path.string());
    LT_CHECK(i == 0 || file.relative_path != sources.files[i - 1].relative_path, "{}: given twice",
             file.path.string());
  }
  if (sources.kind == std::string(kBinKind)) {
    LT_CHECK(sources.files.size() == 1, "import-tokens: a .bin input is imported alone (one --input)");
    LT_CHECK(!options.offsets.empty(), "{}: a .bin input needs --offsets (its document boundaries)",
             sources.files[0].path.string());
    LT_CHECK(options.bin_width.has_value(), "{}: a .bin input needs --dtype uint16 or uint32",
             sources.files[0].path.string());
  } else {
    LT_CHECK(options.offsets.empty(), "--offsets belongs to a .bin input, not to JSONL");
  }
  return sources;
}

// Checks one document's ids and appends it; `where` names it in errors.
template <typename Id>
void add_checked(TokenShardWriter& writer, const std::vector<Id>& ids, int64_t vocab_size, const std::string& where,
                 std::vector<int32_t>& scratch) {
  LT_CHECK(!ids.empty(), "{}: empty document (no ids)", where);
  scratch.resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    LT_CHECK(static_cast<int64_t>(ids[i]) < vocab_size, "{}: id {} at position {} is not below the vocabulary "
             "size {}", where, static_cast<int64_t>(ids[i]), i, vocab_size);
    scratch[i] = static_cast<int32_t>(ids[i]);
  }
  writer.add_document(scratch);
}

// The ids of one JSONL record; `where` is file:line.
std::vector<int64_t> record_ids(const std::string& line, const std::string& where) {
  const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  LT_CHECK(!record.is_discarded() && record.is_object(), "{}: not a JSON object", where);
  const auto ids = record.find("ids");
  const auto input_ids = record.find("input_ids");
  LT_CHECK(ids == record.end() || input_ids == record.end(), "{}: has both \"ids\" and \"input_ids\"", where);
  const auto field = ids != record.end() ? ids : input_ids;
  LT_CHECK(field != record.end(), "{}: no \"ids\" or \"input_ids\" field", where);
  const char* name = ids != record.end() ? "ids" : "input_ids";
  LT_CHECK(field->is_array(), "{}: \"{}\" is not an array", where, name);
  std::vector<int64_t> values;
  values.reserve(field->size());
  for (size_t i = 0; i < field->size(); ++i) {
    const nlohmann::json& value = (*field)[i];
    LT_CHECK(value.is_number_integer() && (value.is_number_unsigned() || value.get<int64_t>() >= 0),
             "{}: \"{}\"[{}] is {}, not a non-negative integer id", where, name, i, value.dump());
    LT_CHECK(!value.is_number_unsigned() || value.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
             "{}: \"{}\"[{}] = {} is not an id", where, name, i, value.dump());
    values.push_back(value.get<int64_t>());
  }
  return values;
}

uint64_t import_jsonl(const SourceFile& source, int64_t vocab_size, TokenShardWriter& writer) {
  LineReader reader(source.path);
  std::string line;
  std::vector<int32_t> scratch;
  uint64_t line_number = 0, documents = 0;
  while (reader.next_line(line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", source.path.string(), line_number);
    add_checked(writer, record_ids(line, where), vocab_size, where, scratch);
    ++documents;
  }
  LT_CHECK(documents > 0, "{}: holds no documents", source.path.string());
  return documents;
}

// The document boundaries of a .bin file of `token_count` ids, checked.
std::vector<uint64_t> read_offsets(const fs::path& path, uint64_t token_count) {
  const std::string bytes = read_file(path);
  LT_CHECK(bytes.size() % 8 == 0 && bytes.size() >= 16, "{}: {} bytes is not two or more little-endian uint64 "
           "document boundaries", path.string(), bytes.size());
  std::vector<uint64_t> offsets(bytes.size() / 8);
  for (size_t i = 0; i < offsets.size(); ++i) {
    uint64_t value = 0;
    for (int b = 7; b >= 0; --b) value = (value << 8) | static_cast<unsigned char>(bytes[i * 8 + b]);
    offsets[i] = value;
  }
  LT_CHECK(offsets.front() == 0, "{}: the first boundary is {}, not 0", path.string(), offsets.front());
  LT_CHECK(offsets.back() == token_count, "{}: the last boundary is {}, but the token file holds {} ids",
           path.string(), offsets.back(), token_count);
  for (size_t d = 0; d + 1 < offsets.size(); ++d) {
    LT_CHECK(offsets[d + 1] >= offsets[d], "{}: boundary {} ({}) is below boundary {} ({})", path.string(), d + 1,
             offsets[d + 1], d, offsets[d]);
  }
  return offsets;
}

template <typename Id>
uint64_t import_bin_as(const SourceFile& source, const std::vector<uint64_t>& offsets, int64_t vocab_size,
                       TokenShardWriter& writer) {
  std::ifstream in(source.path, std::ios::binary);
  LT_CHECK(in.good(), "{}: cannot open", source.path.string());
  std::vector<Id> ids;
  std::vector<int32_t> scratch;
  for (size_t d = 0; d + 1 < offsets.size(); ++d) {
    ids.resize(offsets[d + 1] - offsets[d]);
    in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(Id)));
    LT_CHECK(in.good() || ids.empty(), "{}: read failed in document {}", source.path.string(), d);
    add_checked(writer, ids, vocab_size,
                fmt::format("{}: document {} (ids {}..{})", source.path.string(), d, offsets[d], offsets[d + 1]),
                scratch);
  }
  return offsets.size() - 1;
}

uint64_t import_bin(const SourceFile& source, const ImportOptions& options, int64_t vocab_size,
                    TokenShardWriter& writer) {
  const uint64_t width = static_cast<uint64_t>(*options.bin_width);
  LT_CHECK(source.bytes % width == 0, "{}: {} bytes is not a whole number of {} ids", source.path.string(),
           source.bytes, to_string(*options.bin_width));
  const std::vector<uint64_t> offsets = read_offsets(options.offsets, source.bytes / width);
  return width == 2 ? import_bin_as<uint16_t>(source, offsets, vocab_size, writer)
                    : import_bin_as<uint32_t>(source, offsets, vocab_size, writer);
}

}  // namespace

ImportSummary import_tokens(const ImportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  static_assert(std::endian::native == std::endian::little, "the .bin ids are read as little-endian");
  LT_CHECK(options.shard_source_bytes > 0, "--shard-mb must be positive");
  check_split_name(options.split_name);
  const TokenizerInfo vocabulary = declared_vocabulary(options);
  const Sources sources = discover_sources(options);
  const TokenWidth width = token_width_for_vocab(vocabulary.vocab_size);

  Manifest manifest;
  manifest.input = sources.root.string();
  manifest.input_kind = sources.kind;
  manifest.tokenizer = vocabulary;
  manifest.token_width = width;
  const std::optional<Manifest> previous = open_prepared_output(options.output, vocabulary);
  if (previous)
    for (const auto& [name, split] : previous->splits) manifest.splits[name] = split;
  const SplitRecord* earlier = previous && previous->splits.count(options.split_name)
                                   ? &previous->splits.at(options.split_name) : nullptr;

  std::string settings = fmt::format("import-tokens\nkind={}\nvocab={}\nwidth={}\n", sources.kind,
                                     fmt::format("{}|{}|{}|{}", vocabulary.sha256, vocabulary.vocab_size,
                                                 vocabulary.bos_id, vocabulary.eos_id), to_string(width));
  if (sources.kind == std::string(kBinKind))
    settings += fmt::format("bin_width={}\noffsets={}", to_string(*options.bin_width),
                            source_material(stat_source(fs::absolute(options.offsets), sources.root, false)));

  // Consecutive sources, about shard_source_bytes of input per shard.
  std::vector<std::vector<size_t>> groups;
  uint64_t group_bytes = 0;
  for (size_t i = 0; i < sources.files.size(); ++i) {
    if (groups.empty() || (group_bytes > 0 && group_bytes + sources.files[i].bytes > options.shard_source_bytes)) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(i);
    group_bytes += sources.files[i].bytes;
  }

  const fs::path split_dir = options.output / options.split_name;
  fs::create_directories(split_dir);
  remove_stale_temp_files(split_dir);
  ImportSummary summary;
  summary.sources = sources.files.size();
  SplitRecord record;
  bool changed_any = false;
  for (size_t g = 0; g < groups.size(); ++g) {
    std::string key_material = settings;
    for (size_t i : groups[g]) key_material += source_material(sources.files[i]);
    const std::string key = short_hash(key_material);
    const std::string shard_file = fmt::format("{}/shard-{:05d}.bin", options.split_name, g);
    if (const ShardRecord* done = reusable_shard(options.output, earlier, shard_file, key)) {
      const int64_t old_index = done - earlier->shards.data();
      for (SourceRecord source : earlier->sources)
        if (source.shard == old_index) record.sources.push_back(std::move(source));
      record.shards.push_back(*done);
      ++summary.shards_reused;
    } else {
      if (!changed_any) retire_manifest(options.output);
      changed_any = true;
      const fs::path shard_path = options.output / shard_file;
      TokenShardWriter writer(shard_path, width);
      for (size_t i : groups[g]) {
        const SourceFile& source = sources.files[i];
        const uint64_t documents_before = writer.doc_count(), tokens_before = writer.token_count();
        if (sources.kind == std::string(kBinKind)) import_bin(source, options, vocabulary.vocab_size, writer);
        else import_jsonl(source, vocabulary.vocab_size, writer);
        record.sources.push_back({source.relative_path, source.bytes, source.mtime_ns,
                                  writer.doc_count() - documents_before, writer.token_count() - tokens_before, "",
                                  static_cast<int64_t>(g)});
        summary.bytes_read += source.bytes;
      }
      ShardRecord shard;
      shard.file = shard_file;
      shard.documents = writer.doc_count();
      shard.tokens = writer.token_count();
      shard.key = key;
      writer.finish();
      shard.bytes = fs::file_size(shard_path);
      shard.sha256 = sha256_file(shard_path);
      record.shards.push_back(shard);
    }
    record.documents += record.shards.back().documents;
    record.tokens += record.shards.back().tokens;
    Manifest progress_state = manifest;
    progress_state.splits[options.split_name] = record;
    record_progress(options.output, progress_state);
  }
  remove_stale_shards(split_dir, record);
  summary.documents = record.documents;
  summary.tokens = record.tokens;
  summary.shards = record.shards.size();
  manifest.splits[options.split_name] = std::move(record);
  write_manifest(options.output, manifest);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace longtune::data
