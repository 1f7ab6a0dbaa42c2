// prepare-data's stages, in the order prepare_data() runs them (data/prepare.h): check the settings;
// open the output against what an earlier run left there (a different tokenizer is refused); then
// per split, group its sources into shards and make each in turn (kept if an earlier run finished
// it, else its sources tokenized into part files that are joined into it), recording progress
// after each; manifest.json last. Tokenizing one source is data/prepare_parts.h; the formats are
// data/prepared_data.h and data/token_shard.h.
#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <set>
#include <thread>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "common/progress.h"
#include "data/prepare_parts.h"
#include "data/prepared_data.h"
#include "data/prepared_output.h"
#include "data/text_source.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

namespace longtune::data {
namespace fs = std::filesystem;

namespace {

constexpr const char* kPartsDir = ".parts";

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

// Cuts a split's sources, in order, into groups of about `shard_source_bytes`; each group's key
// names all its inputs, so a shard is reused only for the same inputs.
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

// Refuses settings that cannot give usable output, before any input is read.
void check_settings(const PrepareOptions& options, const Tokenizer& tokenizer) {
  LT_CHECK(tokenizer.bos_id() >= 0 && tokenizer.eos_id() >= 0,
           "tokenizer {}: has no BOS/EOS pieces (bos_id {}, eos_id {}); documents are joined with them",
           options.tokenizer.string(), tokenizer.bos_id(), tokenizer.eos_id());
  LT_CHECK(options.max_line_bytes > 0, "--max-line-bytes must be positive");
  LT_CHECK(options.shard_source_bytes > 0, "--shard-mb must be positive");
  check_split_name(options.split_name);
}

// The manifest's header from this run's settings; splits this run does not prepare stay as the
// earlier run left them.
Manifest start_manifest(const PrepareOptions& options, const InputLayout& layout, const Tokenizer& tokenizer,
                        TokenWidth width) {
  Manifest manifest;
  manifest.input = fs::absolute(options.input).lexically_normal().string();
  manifest.input_kind = to_string(layout.kind);
  const fs::path tokenizer_file = fs::absolute(resolve_tokenizer_file(options.tokenizer)).lexically_normal();
  manifest.tokenizer = {tokenizer_file.string(), tokenizer.sha256(),
                        tokenizer.vocab_size(), tokenizer.bos_id(), tokenizer.eos_id()};
  manifest.token_width = width;
  manifest.max_line_bytes = options.max_line_bytes;
  return manifest;
}

// The one progress line over the whole run: books, tokens, throughput and ETA.
class ProgressDisplay {
 public:
  ProgressDisplay(const InputLayout& layout, const PrepareCounters& counters,
                  std::chrono::steady_clock::time_point start, bool enabled)
      : counters_(counters), start_(start), line_(enabled) {
    for (const SplitSources& split : layout.splits)
      for (const SourceFile& file : split.files) {
        ++total_sources_;
        total_bytes_ += file.bytes;
      }
  }

  void show(const std::string& split_name, bool force) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = total_bytes_ > 0 ? static_cast<double>(counters_.bytes_done) / total_bytes_ : 1.0;
    const double rate = elapsed > 0 ? counters_.bytes_tokenized / elapsed : 0.0;
    const double eta = fraction > 0 ? elapsed * (1.0 - fraction) / fraction : -1.0;
    line_.update(fmt::format("prepare-data {} {} {}/{} books | {} tokens | {}/s | ETA {}", split_name,
                             ProgressLine::bar(fraction), counters_.sources_done.load(), total_sources_,
                             ProgressLine::count(static_cast<double>(counters_.tokens_done)),
                             ProgressLine::bytes(rate), ProgressLine::duration(eta)),
                 force);
  }

  void finish() { line_.finish(); }

 private:
  const PrepareCounters& counters_;
  std::chrono::steady_clock::time_point start_;
  uint64_t total_sources_ = 0, total_bytes_ = 0;
  ProgressLine line_;
};

// What every split of one run shares.
struct RunContext {
  const PrepareOptions& options;
  fs::path out;
  TokenWidth width;
  PartMaker& parts;
  ProgressDisplay& progress;
  const Manifest& manifest;  // the splits so far, copied into each progress record
  std::string settings;      // PartMaker::settings_material(), part of every group's key
};

// Prepares one split, shard by shard in order, and builds its record; prepare() is called once.
// Progress is recorded after each new shard, so a killed run resumes after the last one it made.
class SplitPreparer {
 public:
  SplitPreparer(const RunContext& run, const SplitSources& split, const SplitRecord* earlier,
                SplitSummary& summary)
      : run_(run), split_(split), earlier_(earlier), summary_(summary),
        split_dir_(run.out / split.name), parts_dir_(run.out / kPartsDir / split.name) {}

  SplitRecord prepare() {
    fs::create_directories(split_dir_);
    fs::create_directories(parts_dir_);
    remove_stale_temp_files(split_dir_);
    remove_stale_temp_files(parts_dir_);
    summary_.sources = split_.files.size();
    const std::vector<Group> groups = group_sources(split_, run_.options.shard_source_bytes, run_.settings);
    for (size_t g = 0; g < groups.size(); ++g) {
      if (!reuse_shard(g, groups[g])) {
        retire_manifest(run_.out);
        const std::vector<fs::path> parts = part_paths(groups[g]);
        std::vector<SourceOutcome> outcomes = tokenize_sources(groups[g], parts);
        write_shard(g, groups[g], outcomes, parts);
        record_progress();
      }
      run_.progress.show(split_.name, false);
    }
    remove_stale_shards(split_dir_, record_);
    summary_.documents = record_.documents;
    summary_.tokens = record_.tokens;
    summary_.shards = record_.shards.size();
    return std::move(record_);
  }

 private:
  std::string shard_file_name(size_t g) const { return fmt::format("{}/shard-{:05d}.bin", split_.name, g); }

  // A shard finished by an earlier run on the same inputs is kept as it is, with its sources'
  // records: what lets a rerun skip finished work and a killed run's rerun match a clean run.
  bool reuse_shard(size_t g, const Group& group) {
    const std::string shard_file = shard_file_name(g);
    const fs::path shard_path = run_.out / shard_file;
    const ShardRecord* done = reusable_shard(run_.out, earlier_, shard_file, group.key);
    if (done == nullptr) return false;
    uint64_t group_bytes = 0;
    std::set<std::string> group_paths;
    for (size_t i : group.sources) {
      group_bytes += split_.files[i].bytes;
      group_paths.insert(split_.files[i].relative_path);
    }
    const int64_t old_index = &*done - &earlier_->shards.front();
    for (SourceRecord source : earlier_->sources)
      if (source.shard == old_index && group_paths.count(source.path)) {
        source.shard = static_cast<int64_t>(g);
        record_.sources.push_back(std::move(source));
      }
    for (const SkippedRecord& skipped : earlier_->skipped)
      if (group_paths.count(skipped_source_path(skipped.path))) record_.skipped.push_back(skipped);
    record_.shards.push_back(*done);
    record_.documents += done->documents;
    record_.tokens += done->tokens;
    PrepareCounters& counters = run_.parts.counters();
    counters.sources_done += group.sources.size();
    counters.bytes_done += group_bytes;
    counters.tokens_done += done->tokens;
    ++summary_.shards_reused;
    return true;
  }

  // Where each of the group's sources keeps its tokens until the shard is written.
  std::vector<fs::path> part_paths(const Group& group) const {
    std::vector<fs::path> parts(group.sources.size());
    for (size_t k = 0; k < group.sources.size(); ++k)
      parts[k] = run_.parts.part_path(parts_dir_, split_.files[group.sources[k]]);
    return parts;
  }

  // Tokenizes the group's sources into part files: books in parallel, JSONL files one by one
  // with parallel batches inside, the progress line kept up to date meanwhile.
  std::vector<SourceOutcome> tokenize_sources(const Group& group, const std::vector<fs::path>& parts) {
    PartMaker& maker = run_.parts;
    PrepareCounters& counters = maker.counters();
    std::vector<SourceOutcome> outcomes(group.sources.size());
    auto finish_source = [&](size_t k) {
      counters.sources_done += 1;
      counters.bytes_done += split_.files[group.sources[k]].bytes;
      counters.tokens_done += outcomes[k].tokens;
    };
    std::vector<size_t> books, jsonl_files;
    for (size_t k = 0; k < group.sources.size(); ++k)
      (split_.files[group.sources[k]].jsonl ? jsonl_files : books).push_back(k);
    std::atomic<bool> books_done{false};
    std::exception_ptr books_failure;
    std::thread book_runner([&] {
      try {
        maker.parallel_for(books.size(), [&](size_t b) {
          const size_t k = books[b];
          outcomes[k] = maker.process_text(split_.files[group.sources[k]], parts[k]);
          finish_source(k);
        });
      } catch (...) {
        books_failure = std::current_exception();
      }
      books_done = true;
    });
    while (!books_done) {
      run_.progress.show(split_.name, false);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    book_runner.join();
    if (books_failure) std::rethrow_exception(books_failure);
    for (size_t k : jsonl_files) {
      outcomes[k] = maker.process_jsonl(split_.files[group.sources[k]], parts[k]);
      finish_source(k);
      run_.progress.show(split_.name, false);
    }
    return outcomes;
  }

  // Joins the parts into the shard, in source order, records it and its sources, and drops the parts.
  void write_shard(size_t g, const Group& group, std::vector<SourceOutcome>& outcomes,
                   const std::vector<fs::path>& parts) {
    const std::string shard_file = shard_file_name(g);
    const fs::path shard_path = run_.out / shard_file;
    bool retry_later = false;
    TokenShardWriter writer(shard_path, run_.width);
    for (size_t k = 0; k < group.sources.size(); ++k) {
      const SourceFile& source = split_.files[group.sources[k]];
      SourceOutcome& outcome = outcomes[k];
      for (SkippedRecord& bad : outcome.bad_records) record_.skipped.push_back(std::move(bad));
      if (!outcome.skip_reason.empty()) {
        LT_WARN("{}: skipped: {}", source.path.string(), outcome.skip_reason);
        record_.skipped.push_back({source.relative_path, outcome.skip_reason});
        retry_later |= outcome.retry_later;
        ++summary_.skipped;
        continue;
      }
      if (outcome.reused) ++summary_.sources_reused;
      const TokenShard part(parts[k]);
      for (uint64_t d = 0; d < part.doc_count(); ++d) writer.add_document(part.document(d));
      record_.sources.push_back({source.relative_path, source.bytes, source.mtime_ns, outcome.documents,
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
    record_.shards.push_back(shard);
    record_.documents += shard.documents;
    record_.tokens += shard.tokens;
    std::error_code error;
    for (const fs::path& part : parts) fs::remove(part, error);
  }

  // Records progress so that a killed run resumes after this shard.
  void record_progress() const {
    Manifest progress_state = run_.manifest;
    progress_state.splits[split_.name] = record_;
    data::record_progress(run_.out, progress_state);
  }

  const RunContext& run_;
  const SplitSources& split_;
  const SplitRecord* earlier_;  // this split in the earlier run's records, if any
  SplitSummary& summary_;
  const fs::path split_dir_;
  const fs::path parts_dir_;
  SplitRecord record_;
};

}  // namespace

PrepareSummary prepare_data(const PrepareOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const Tokenizer tokenizer(options.tokenizer);
  check_settings(options, tokenizer);
  const InputLayout layout = discover_inputs(options.input, options.splits, options.split_name);
  for (const std::string& warning : layout.warnings) LT_WARN("{}", warning);
  const TokenWidth width = token_width_for_vocab(tokenizer.vocab_size());
  const int threads = options.threads > 0 ? options.threads
                                          : std::max(1u, std::thread::hardware_concurrency());

  Manifest manifest = start_manifest(options, layout, tokenizer, width);
  const std::optional<Manifest> previous = open_prepared_output(options.output, manifest.tokenizer);
  for (const auto& [name, split] : previous ? previous->splits : std::map<std::string, SplitRecord>{})
    manifest.splits[name] = split;  // splits not prepared in this run stay as they were

  PartMaker parts(options, tokenizer, width, threads);
  ProgressDisplay progress(layout, parts.counters(), start, options.progress);
  const RunContext run{options, options.output, width, parts, progress, manifest, parts.settings_material()};
  PrepareSummary summary;
  summary.threads = threads;
  for (const SplitSources& split : layout.splits) {
    const SplitRecord* earlier = nullptr;
    if (previous && previous->splits.count(split.name)) earlier = &previous->splits.at(split.name);
    SplitRecord record = SplitPreparer(run, split, earlier, summary.splits[split.name]).prepare();
    manifest.splits[split.name] = std::move(record);
  }
  progress.show("done", true);
  progress.finish();

  write_manifest(options.output, manifest);
  remove_tree(options.output / kPartsDir);
  const PrepareCounters& counters = parts.counters();
  summary.bytes_tokenized = counters.bytes_tokenized;
  summary.tokens_tokenized = counters.tokens_tokenized;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace longtune::data
