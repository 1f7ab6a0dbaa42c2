// Training-reader throughput: writes a synthetic shard set (random documents of uint16 ids) with
// TokenShardWriter, then times PackedSequenceReader (next_global_batch + read_samples, i.e. the
// int64 [batch, seq_len + 1] buffer the trainer turns into a tensor) at long-context sequence
// lengths, on one thread as the trainer reads. It must outrun the GPU by a wide margin.
// Not a test: no pass/fail, just a table.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "common/check.h"
#include "data/documents.h"
#include "data/packed_reader.h"
#include "data/token_shard.h"

namespace {

namespace fs = std::filesystem;
using longtune::data::PackedSequenceReader;
using longtune::data::TokenDocuments;
using longtune::data::TokenShard;
using longtune::data::TokenShardWriter;
using longtune::data::TokenWidth;

// Shards in order as one document list (a stand-in for the real prepared split class).
class ShardDocuments final : public TokenDocuments {
 public:
  explicit ShardDocuments(const std::vector<fs::path>& paths) {
    first_doc_.push_back(0);
    for (const auto& p : paths) {
      shards_.push_back(std::make_unique<TokenShard>(p));
      first_doc_.push_back(first_doc_.back() + shards_.back()->doc_count());
      total_ += shards_.back()->token_count();
    }
  }
  uint64_t num_documents() const override { return first_doc_.back(); }
  uint64_t document_length(uint64_t doc) const override {
    const size_t s = shard_of(doc);
    return shards_[s]->document_length(doc - first_doc_[s]);
  }
  void copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const override {
    const size_t s = shard_of(doc);
    shards_[s]->copy_tokens(doc - first_doc_[s], begin, count, out);
  }
  uint64_t total_tokens() const override { return total_; }

 private:
  size_t shard_of(uint64_t doc) const {
    LT_CHECK(doc < num_documents(), "document {} out of range", doc);
    return static_cast<size_t>(std::upper_bound(first_doc_.begin(), first_doc_.end(), doc) -
                               first_doc_.begin()) -
           1;
  }
  std::vector<std::unique_ptr<TokenShard>> shards_;
  std::vector<uint64_t> first_doc_;
  uint64_t total_ = 0;
};

// xorshift64*: fast, fixed output, good enough for synthetic token ids and lengths.
struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
};

std::vector<fs::path> write_dataset(const fs::path& dir, uint64_t total_tokens, int num_shards) {
  Rng rng{0x9E3779B97F4A7C15ULL};
  std::vector<fs::path> paths;
  std::vector<int32_t> doc;
  for (int s = 0; s < num_shards; ++s) {
    const fs::path path = dir / ("bench-shard-" + std::to_string(s) + ".bin");
    TokenShardWriter writer(path, TokenWidth::kUInt16);
    const uint64_t shard_tokens = total_tokens / num_shards;
    while (writer.token_count() < shard_tokens) {
      // Book-like and web-like documents mixed: 64 to ~64k tokens, log-uniform-ish.
      const uint64_t len =
          std::min<uint64_t>(64ULL << (rng.next() % 11), shard_tokens - writer.token_count());
      doc.resize(len);
      for (auto& t : doc) t = static_cast<int32_t>(rng.next() % 32000);
      writer.add_document(doc);
    }
    writer.finish();
    paths.push_back(path);
  }
  return paths;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PackedSequenceReader throughput on a synthetic shard set"};
  std::string dir;
  uint64_t tokens = 200'000'000;
  int shards = 2;
  int reps = 5;
  int64_t global_batch = 64;
  double gb_per_rep = 1.0;
  bool keep = false;
  app.add_option("dir", dir, "Existing scratch directory for the shard files")->required();
  app.add_option("--tokens", tokens, "Total synthetic tokens (uint16)");
  app.add_option("--shards", shards, "Number of shard files");
  app.add_option("--reps", reps, "Timed repetitions (median reported)");
  app.add_option("--global-batch", global_batch, "Sequences per global batch");
  app.add_option("--gb-per-rep", gb_per_rep, "int64 output per repetition, GB");
  app.add_flag("--keep", keep, "Keep the shard files");
  CLI11_PARSE(app, argc, argv);

  try {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const auto paths = write_dataset(dir, tokens, shards);
    const double write_s = std::chrono::duration<double>(Clock::now() - t0).count();
    ShardDocuments documents(paths);
    std::printf(
        "dataset: %llu tokens, %llu documents, %d shards, written in %.2f s (%.0f Mtok/s)\n",
        static_cast<unsigned long long>(documents.total_tokens()),
        static_cast<unsigned long long>(documents.num_documents()), shards, write_s,
        documents.total_tokens() / write_s / 1e6);
    std::printf("%8s %6s %8s %12s %10s\n", "seq_len", "batch", "batches", "seq/s", "GB/s");

    for (int64_t seq_len : {8192, 32768}) {
      PackedSequenceReader reader(documents, seq_len, 1, 2, 1234);
      const double batch_bytes = static_cast<double>(global_batch) * (seq_len + 1) * 8;
      const int batches = std::max(1, static_cast<int>(gb_per_rep * 1e9 / batch_bytes));
      std::vector<double> seconds;
      int64_t checksum = 0;
      for (int rep = -1; rep < reps; ++rep) {  // rep -1 warms the page cache and allocator
        const auto start = Clock::now();
        for (int b = 0; b < batches; ++b) {
          const auto ids = reader.next_global_batch(global_batch);
          const auto batch = reader.read_samples(ids);
          checksum += batch[batch.size() / 2];  // keep the reads observable
        }
        if (rep >= 0)
          seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
      }
      const double s = median(seconds);
      std::printf("%8lld %6lld %8d %12.1f %10.2f   (checksum %lld)\n",
                  static_cast<long long>(seq_len), static_cast<long long>(global_batch), batches,
                  batches * global_batch / s, batches * batch_bytes / s / 1e9,
                  static_cast<long long>(checksum));
    }
    if (!keep) {
      for (const auto& p : paths) fs::remove(p);
    }
  } catch (const longtune::Error& e) {
    std::fprintf(stderr, "reader_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
