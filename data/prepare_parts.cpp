// prepare-data's per-source stage (prepare_parts.h): a book or JSONL file tokenized into its part
// file, or the part an earlier run left reused. Reading and cleaning the text is text_source.h's.
#include "data/prepare_parts.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>

#include "common/check.h"
#include "common/file_io.h"
#include "common/log.h"
#include "data/prepare.h"
#include "data/prepared_output.h"
#include "data/tokenizer.h"

namespace longtune::data {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxBadRecordsListed = 100;

SourceOutcome unreadable() {
  SourceOutcome outcome;
  outcome.skip_reason = "unreadable (missing, not a regular file, or no read permission)";
  outcome.retry_later = true;  // a fixed link or permission is picked up by the next run
  return outcome;
}

}  // namespace

PartMaker::PartMaker(const PrepareOptions& options, const Tokenizer& tokenizer, TokenWidth width, int threads)
    : options_(options), tokenizer_(tokenizer), width_(width), threads_(threads) {}

fs::path PartMaker::part_path(const fs::path& parts_dir, const SourceFile& source) const {
  return parts_dir / (short_hash(settings_material() + source_material(source)) + ".part");
}

std::string PartMaker::settings_material() const {
  return fmt::format("tokenizer={}\nmax_line_bytes={}\nwidth={}\n", tokenizer_.sha256(),
                     options_.max_line_bytes, to_string(width_));
}

SourceOutcome PartMaker::process_text(const SourceFile& source, const fs::path& part) {
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

SourceOutcome PartMaker::process_jsonl(const SourceFile& source, const fs::path& part) {
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

std::optional<SourceOutcome> PartMaker::reuse_part(const fs::path& part) {
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

void PartMaker::parallel_for(size_t n, const std::function<void(size_t)>& body) {
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

}  // namespace longtune::data
