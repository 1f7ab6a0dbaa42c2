#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/progress.h"
#include "data/prepared_data.h"
#include "data/text_source.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

namespace longtune::data {
namespace fs = std::filesystem;

namespace {

constexpr const char* kProgressFile = ".progress.json";
constexpr const char* kPartsDir = ".parts";
constexpr size_t kMaxBadRecordsListed = 100;

std::string short_hash(const std::string& material) { return sha256_hex(material).substr(0, 32); }

std::string source_material(const SourceFile& source) {
  return fmt::format("{}\t{}\t{}\t{}\n", source.relative_path, source.bytes, source.mtime_ns,
                     source.readable ? 1 : 0);
}

// Leftovers of AtomicFile writes killed before their rename.
void remove_stale_temp_files(const fs::path& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) return;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, error))
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) stale.push_back(entry.path());
  for (const fs::path& path : stale) fs::remove(path, error);
}

// The source a skipped entry belongs to: JSONL lines are listed as "file.jsonl:LINE".
std::string skipped_source_path(const std::string& path) {
  const size_t colon = path.rfind(':');
  if (colon == std::string::npos || colon + 1 == path.size()) return path;
  for (size_t i = colon + 1; i < path.size(); ++i)
    if (path[i] < '0' || path[i] > '9') return path;
  return path.substr(0, colon);
}

// One shard's worth of consecutive sources.
struct Group {
  std::vector<size_t> sources;  // indices into the split's files
  std::string key;              // of the inputs: tokenizer, options, each source's stat
};

std::vector<Group> group_sources(const SplitSources& split, uint64_t shard_source_bytes,
                                 const std::string& settings_material) {
  std::vector<Group> groups;
  uint64_t bytes = 0;
  for (size_t i = 0; i < split.files.size(); ++i) {
    const uint64_t size = split.files[i].bytes;
    if (groups.empty() || (bytes > 0 && bytes + size > shard_source_bytes)) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().sources.push_back(i);
    bytes += size;
  }
  for (Group& group : groups) {
    std::string material = settings_material;
    for (size_t i : group.sources) material += source_material(split.files[i]);
    group.key = short_hash(material);
  }
  return groups;
}

// What became of one source in this run.
struct SourceOutcome {
  uint64_t documents = 0;
  uint64_t tokens = 0;
  bool reused = false;
  std::string skip_reason;  // non-empty: skipped (whole source)
  bool retry_later = false;
  std::vector<SkippedRecord> bad_records;  // JSONL lines that were not documents
};

SourceOutcome unreadable() {
  SourceOutcome outcome;
  outcome.skip_reason = "unreadable (missing, not a regular file, or no read permission)";
  outcome.retry_later = true;  // a fixed link or permission is picked up by the next run
  return outcome;
}

struct Counters {
  std::atomic<uint64_t> sources_done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> tokens_done{0};
  std::atomic<uint64_t> bytes_tokenized{0};
  std::atomic<uint64_t> tokens_tokenized{0};
};

class Preparer {
 public:
  Preparer(const PrepareOptions& options, const Tokenizer& tokenizer, TokenWidth width, int threads)
      : options_(options), tokenizer_(tokenizer), width_(width), threads_(threads) {}

  fs::path part_path(const fs::path& parts_dir, const SourceFile& source) const {
    return parts_dir / (short_hash(settings_material() + source_material(source)) + ".part");
  }

  std::string settings_material() const {
    return fmt::format("tokenizer={}\nmax_line_bytes={}\nwidth={}\n", tokenizer_.sha256(),
                       options_.max_line_bytes, to_string(width_));
  }

  // A book (.txt): one document, tokenized into its own part file.
  SourceOutcome process_text(const SourceFile& source, const fs::path& part) {
    SourceOutcome outcome;
    if (auto reused = reuse_part(part)) return *reused;
    if (!source.readable) return unreadable();
    TextDocument document = read_text_document(source.path, options_.max_line_bytes);
    if (!document.skip_reason.empty()) {
      outcome.skip_reason = document.skip_reason;
      outcome.retry_later = document.retry_later;
      return outcome;
    }
    if (document.invalid_utf8_replaced > 0)
      LT_WARN("{}: {} invalid UTF-8 sequence(s) replaced by U+FFFD", source.path.string(),
              document.invalid_utf8_replaced);
    const std::vector<int32_t> ids = tokenizer_.encode(document.text);
    counters_.bytes_tokenized += document.text.size();
    counters_.tokens_tokenized += ids.size();
    if (ids.empty()) {
      outcome.skip_reason = "no tokens";
      return outcome;
    }
    TokenShardWriter writer(part, width_);
    writer.add_document(ids);
    writer.finish();
    outcome.documents = 1;
    outcome.tokens = ids.size();
    return outcome;
  }

  // A JSONL file: many documents, read in order and tokenized in parallel batches.
  SourceOutcome process_jsonl(const SourceFile& source, const fs::path& part) {
    SourceOutcome outcome;
    if (auto reused = reuse_part(part)) return *reused;
    if (!source.readable) return unreadable();
    TokenShardWriter writer(part, width_);
    std::vector<std::string> batch;
    uint64_t batch_bytes = 0, empty_documents = 0, bad_records = 0;
    auto flush = [&] {
      std::vector<std::vector<int32_t>> encoded(batch.size());
      parallel_for(batch.size(), [&](size_t i) { encoded[i] = tokenizer_.encode(batch[i]); });
      for (size_t i = 0; i < batch.size(); ++i) {
        counters_.bytes_tokenized += batch[i].size();
        counters_.tokens_tokenized += encoded[i].size();
        if (encoded[i].empty()) {
          ++empty_documents;
          continue;
        }
        writer.add_document(encoded[i]);
        outcome.tokens += encoded[i].size();
        counters_.tokens_done += encoded[i].size();
      }
      batch.clear();
      batch_bytes = 0;
    };
    read_jsonl(
        source.path,
        [&](uint64_t, std::string text) {
          batch_bytes += text.size();
          batch.push_back(std::move(text));
          if (batch.size() >= 4096 || batch_bytes >= (32u << 20)) flush();
        },
        [&](uint64_t line, const std::string& reason) {
          ++bad_records;
          if (outcome.bad_records.size() < kMaxBadRecordsListed)
            outcome.bad_records.push_back({fmt::format("{}:{}", source.relative_path, line), reason});
        });
    flush();
    if (bad_records > 0)
      LT_WARN("{}: {} line(s) skipped (not a JSON object with a string \"text\"); first at {}",
              source.path.string(), bad_records, outcome.bad_records.front().path);
    if (empty_documents > 0) LT_WARN("{}: {} empty document(s) skipped", source.path.string(), empty_documents);
    if (writer.doc_count() == 0) {
      outcome.skip_reason = "no documents with text";
      return outcome;  // the unfinished writer leaves nothing behind
    }
    outcome.documents = writer.doc_count();
    writer.finish();
    counters_.tokens_done -= outcome.tokens;  // counted again by the caller
    return outcome;
  }

  std::optional<SourceOutcome> reuse_part(const fs::path& part) {
    std::error_code error;
    if (!fs::exists(part, error)) return std::nullopt;
    try {
      TokenShard shard(part);
      SourceOutcome outcome;
      outcome.documents = shard.doc_count();
      outcome.tokens = shard.token_count();
      outcome.reused = true;
      return outcome;
    } catch (const Error& e) {
      LT_WARN("{}: damaged part file, redoing it: {}", part.string(), e.what());
      fs::remove(part, error);
      return std::nullopt;
    }
  }

  // Runs body(i) for i in [0, n) on the worker threads; rethrows the first exception.
  void parallel_for(size_t n, const std::function<void(size_t)>& body) {
    std::atomic<size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    auto work = [&] {
      while (true) {
        const size_t i = next++;
        if (i >= n) return;
        try {
          body(i);
        } catch (...) {
          std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = n;
        }
      }
    };
    const size_t workers = std::min<size_t>(static_cast<size_t>(threads_), n);
    std::vector<std::thread> pool;
    for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
    work();
    for (std::thread& thread : pool) thread.join();
    if (failure) std::rethrow_exception(failure);
  }

  Counters& counters() { return counters_; }

 private:
  const PrepareOptions& options_;
  const Tokenizer& tokenizer_;
  TokenWidth width_;
  int threads_;
  Counters counters_;
};

// The earlier run's records, to skip what it finished: the manifest, else the progress file.
std::optional<Manifest> previous_state(const fs::path& out) {
  for (const char* name : {"manifest.json", kProgressFile}) {
    const fs::path path = out / name;
    if (!fs::is_regular_file(path)) continue;
    try {
      return Manifest::from_json(read_file(path), path.string());
    } catch (const Error& e) {
      LT_WARN("{}: unreadable ({}); starting over", path.string(), e.what());
    }
  }
  return std::nullopt;
}

}  // namespace

PrepareSummary prepare_data(const PrepareOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer tokenizer(options.tokenizer);
  LT_CHECK(tokenizer.bos_id() >= 0 && tokenizer.eos_id() >= 0,
           "tokenizer {}: has no BOS/EOS pieces (bos_id {}, eos_id {}); documents are joined with them",
           options.tokenizer.string(), tokenizer.bos_id(), tokenizer.eos_id());
  LT_CHECK(options.max_line_bytes > 0, "--max-line-bytes must be positive");
  LT_CHECK(options.shard_source_bytes > 0, "--shard-mb must be positive");
  const InputLayout layout = discover_inputs(options.input, options.splits, options.split_name);
  for (const std::string& warning : layout.warnings) LT_WARN("{}", warning);
  const TokenWidth width = token_width_for_vocab(tokenizer.vocab_size());
  const int threads = options.threads > 0 ? options.threads
                                          : std::max(1u, std::thread::hardware_concurrency());

  const fs::path out = options.output;
  fs::create_directories(out);
  std::optional<Manifest> previous = previous_state(out);
  if (previous) {
    LT_CHECK(previous->tokenizer.sha256 == tokenizer.sha256(),
             "{}: was prepared with tokenizer {} (sha256 {}), but --tokenizer {} has sha256 {}; use "
             "another --out, or delete {} to start over", out.string(), previous->tokenizer.path,
             previous->tokenizer.sha256, options.tokenizer.string(), tokenizer.sha256(), out.string());
  }
  remove_stale_temp_files(out);

  Manifest manifest;
  manifest.input = fs::absolute(options.input).lexically_normal().string();
  manifest.input_kind = to_string(layout.kind);
  manifest.tokenizer = {fs::absolute(options.tokenizer).lexically_normal().string(), tokenizer.sha256(),
                        tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id()};
  manifest.token_width = width;
  manifest.max_line_bytes = options.max_line_bytes;
  if (previous)  // splits not prepared in this run stay as they were
    for (const auto& [name, split] : previous->splits) manifest.splits[name] = split;

  Preparer preparer(options, tokenizer, width, threads);
  Counters& counters = preparer.counters();
  uint64_t total_sources = 0, total_bytes = 0;
  for (const SplitSources& split : layout.splits)
    for (const SourceFile& file : split.files) {
      ++total_sources;
      total_bytes += file.bytes;
    }
  ProgressLine progress(options.progress);
  auto show = [&](const std::string& split_name, bool force) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double fraction = total_bytes > 0 ? static_cast<double>(counters.bytes_done) / total_bytes : 1.0;
    const double rate = elapsed > 0 ? counters.bytes_tokenized / elapsed : 0.0;
    const double eta = fraction > 0 ? elapsed * (1.0 - fraction) / fraction : -1.0;
    progress.update(fmt::format("prepare-data {} {} {}/{} books | {} tokens | {}/s | ETA {}", split_name,
                                ProgressLine::bar(fraction), counters.sources_done.load(), total_sources,
                                ProgressLine::count(static_cast<double>(counters.tokens_done)),
                                ProgressLine::bytes(rate), ProgressLine::duration(eta)),
                    force);
  };

  PrepareSummary summary;
  summary.threads = threads;
  const std::string settings = preparer.settings_material();
  for (const SplitSources& split : layout.splits) {
    const fs::path split_dir = out / split.name;
    const fs::path parts_dir = out / kPartsDir / split.name;
    fs::create_directories(split_dir);
    fs::create_directories(parts_dir);
    remove_stale_temp_files(split_dir);
    remove_stale_temp_files(parts_dir);
    const SplitRecord* earlier = nullptr;
    if (previous && previous->splits.count(split.name)) earlier = &previous->splits.at(split.name);

    SplitRecord record;
    SplitSummary& split_summary = summary.splits[split.name];
    split_summary.sources = split.files.size();
    const std::vector<Group> groups = group_sources(split, options.shard_source_bytes, settings);
    for (size_t g = 0; g < groups.size(); ++g) {
      const Group& group = groups[g];
      const std::string shard_file = fmt::format("{}/shard-{:05d}.bin", split.name, g);
      const fs::path shard_path = out / shard_file;
      uint64_t group_bytes = 0;
      std::set<std::string> group_paths;
      for (size_t i : group.sources) {
        group_bytes += split.files[i].bytes;
        group_paths.insert(split.files[i].relative_path);
      }

      // A shard finished by an earlier run on the same inputs is kept as it is.
      const ShardRecord* done = nullptr;
      if (earlier)
        for (const ShardRecord& shard : earlier->shards)
          if (shard.file == shard_file && shard.key == group.key) done = &shard;
      std::error_code error;
      if (done && fs::is_regular_file(shard_path, error) && fs::file_size(shard_path, error) == done->bytes) {
        const int64_t old_index = &*done - &earlier->shards.front();
        for (SourceRecord source : earlier->sources)
          if (source.shard == old_index && group_paths.count(source.path)) {
            source.shard = static_cast<int64_t>(g);
            record.sources.push_back(std::move(source));
          }
        for (const SkippedRecord& skipped : earlier->skipped)
          if (group_paths.count(skipped_source_path(skipped.path))) record.skipped.push_back(skipped);
        record.shards.push_back(*done);
        record.documents += done->documents;
        record.tokens += done->tokens;
        counters.sources_done += group.sources.size();
        counters.bytes_done += group_bytes;
        counters.tokens_done += done->tokens;
        ++split_summary.shards_reused;
        show(split.name, false);
        continue;
      }

      // Tokenize the group's sources into part files: books in parallel, JSONL files one by one
      // with parallel batches inside.
      std::vector<SourceOutcome> outcomes(group.sources.size());
      std::vector<fs::path> parts(group.sources.size());
      for (size_t k = 0; k < group.sources.size(); ++k)
        parts[k] = preparer.part_path(parts_dir, split.files[group.sources[k]]);
      auto finish_source = [&](size_t k) {
        counters.sources_done += 1;
        counters.bytes_done += split.files[group.sources[k]].bytes;
        counters.tokens_done += outcomes[k].tokens;
      };
      std::vector<size_t> books, jsonl_files;
      for (size_t k = 0; k < group.sources.size(); ++k)
        (split.files[group.sources[k]].jsonl ? jsonl_files : books).push_back(k);
      std::atomic<bool> books_done{false};
      std::exception_ptr books_failure;
      std::thread book_runner([&] {
        try {
          preparer.parallel_for(books.size(), [&](size_t b) {
            const size_t k = books[b];
            outcomes[k] = preparer.process_text(split.files[group.sources[k]], parts[k]);
            finish_source(k);
          });
        } catch (...) {
          books_failure = std::current_exception();
        }
        books_done = true;
      });
      while (!books_done) {
        show(split.name, false);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      book_runner.join();
      if (books_failure) std::rethrow_exception(books_failure);
      for (size_t k : jsonl_files) {
        outcomes[k] = preparer.process_jsonl(split.files[group.sources[k]], parts[k]);
        finish_source(k);
        show(split.name, false);
      }

      // Join the parts into the shard, in source order.
      bool retry_later = false;
      TokenShardWriter writer(shard_path, width);
      for (size_t k = 0; k < group.sources.size(); ++k) {
        const SourceFile& source = split.files[group.sources[k]];
        SourceOutcome& outcome = outcomes[k];
        for (SkippedRecord& bad : outcome.bad_records) record.skipped.push_back(std::move(bad));
        if (!outcome.skip_reason.empty()) {
          LT_WARN("{}: skipped: {}", source.path.string(), outcome.skip_reason);
          record.skipped.push_back({source.relative_path, outcome.skip_reason});
          retry_later |= outcome.retry_later;
          ++split_summary.skipped;
          continue;
        }
        if (outcome.reused) ++split_summary.sources_reused;
        const TokenShard part(parts[k]);
        for (uint64_t d = 0; d < part.doc_count(); ++d) writer.add_document(part.document(d));
        record.sources.push_back({source.relative_path, source.bytes, source.mtime_ns, outcome.documents,
                                  outcome.tokens, source.title, static_cast<int64_t>(g)});
      }
      ShardRecord shard;
      shard.file = shard_file;
      shard.documents = writer.doc_count();
      shard.tokens = writer.token_count();
      writer.finish();
      shard.bytes = fs::file_size(shard_path);
      shard.sha256 = sha256_file(shard_path);
      // A source that may read fine next time keeps this shard from counting as finished.
      shard.key = retry_later ? group.key + "-incomplete" : group.key;
      record.shards.push_back(shard);
      record.documents += shard.documents;
      record.tokens += shard.tokens;
      for (const fs::path& part : parts) fs::remove(part, error);

      // Record progress so that a killed run resumes after this shard.
      Manifest progress_state = manifest;
      progress_state.splits[split.name] = record;
      write_file_atomic(out / kProgressFile, progress_state.to_json());
      show(split.name, false);
    }
    // Shards of an earlier, larger input that no longer belong.
    std::set<std::string> current;
    for (const ShardRecord& shard : record.shards) current.insert(fs::path(shard.file).filename().string());
    std::vector<fs::path> stale;
    for (const auto& entry : fs::directory_iterator(split_dir))
      if (!current.count(entry.path().filename().string())) stale.push_back(entry.path());
    for (const fs::path& path : stale) fs::remove(path);
    split_summary.documents = record.documents;
    split_summary.tokens = record.tokens;
    split_summary.shards = record.shards.size();
    manifest.splits[split.name] = std::move(record);
  }
  show("done", true);
  progress.finish();

  // An unchanged manifest is left alone, so a rerun on unchanged input touches no file.
  const std::string manifest_text = manifest.to_json();
  std::error_code ignored;
  if (!fs::is_regular_file(out / "manifest.json", ignored) || read_file(out / "manifest.json") != manifest_text)
    write_file_atomic(out / "manifest.json", manifest_text);
  std::error_code error;
  fs::remove(out / kProgressFile, error);
  remove_tree(out / kPartsDir);
  summary.bytes_tokenized = counters.bytes_tokenized;
  summary.tokens_tokenized = counters.tokens_tokenized;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace longtune::data
