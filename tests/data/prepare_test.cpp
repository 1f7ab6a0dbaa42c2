// prepare-data end to end on a generated PG-19-style corpus: documents equal the tokenizer's output,
// reruns reuse finished shards and give identical bytes, changed books are redone, bad books are
// skipped with reasons, and a different tokenizer is refused.
#include "data/prepare.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <fstream>

#include "common/check.h"
#include "tests/test_support.h"
#include "common/file_io.h"
#include "data/packed_reader.h"
#include "data/prepared_data.h"
#include "data/tokenizer.h"

namespace longtune::data {
namespace {

using longtune::testing::TempDir;
const auto write = longtune::testing::write_bytes;
namespace fs = std::filesystem;

// Deterministic pseudo-English so that BPE has something to merge.
std::string book_text(int seed, int lines) {
  static const char* words[] = {"the", "whale", "sea", "ship", "captain", "and", "of", "a", "long",
                                "voyage", "night", "storm", "harbour", "sailor", "1851", "said"};
  uint64_t state = 0x9E3779B97F4A7C15ull * (seed + 1);
  std::string text;
  for (int l = 0; l < lines; ++l) {
    for (int w = 0; w < 12; ++w) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      text += words[(state >> 33) % 16];
      text += w == 11 ? ".\n" : " ";
    }
  }
  return text;
}

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 6; ++i) write(root() / "train" / (std::to_string(100 + i) + ".txt"), book_text(i, 40));
    write(root() / "train" / "200.txt", "");  // empty: skipped
    write(root() / "train" / "201.txt", std::string("bin\0ary", 7));
    write(root() / "test" / "300.txt", book_text(99, 30) + "caf\xe9\r\n");  // Latin-1 byte, CRLF
    TokenizerTrainOptions options;
    options.inputs = {root()};
    options.vocab_size = 320;
    options.output_prefix = dir_.path() / "tok";
    train_tokenizer(options);
  }
  fs::path root() const { return dir_.path() / "corpus"; }
  fs::path tokenizer_path() const { return dir_.path() / "tok.model"; }
  PrepareOptions options(const fs::path& out) const {
    PrepareOptions o;
    o.input = root();
    o.tokenizer = tokenizer_path();
    o.output = out;
    o.threads = 2;
    o.shard_source_bytes = 2500;  // several books per shard, several shards
    o.progress = false;
    return o;
  }

  TempDir dir_;
};

TEST_F(PrepareTest, DocumentsEqualTokenizerOutputAndRerunIsIdentical) {
  const fs::path out = dir_.path() / "out";
  const PrepareSummary first = prepare_data(options(out));
  EXPECT_EQ(first.splits.at("train").documents, 6u);
  EXPECT_EQ(first.splits.at("train").skipped, 2u);
  EXPECT_GT(first.splits.at("train").shards, 1u);

  const Tokenizer tokenizer(tokenizer_path());
  const PreparedSplit train(out, "train", tokenizer.sha256(), /*verify_checksums=*/true);
  ASSERT_EQ(train.num_documents(), 6u);
  for (int i = 0; i < 6; ++i) {
    const std::vector<int32_t> expected = tokenizer.encode(book_text(i, 40));
    std::vector<int64_t> got(train.document_length(i));
    train.copy_tokens(i, 0, got.size(), got.data());
    EXPECT_EQ(got, std::vector<int64_t>(expected.begin(), expected.end())) << "book " << i;
  }
  const PreparedSplit test(out / "test");
  const std::vector<int32_t> expected = tokenizer.encode(book_text(99, 30) + "caf\xEF\xBF\xBD\n");
  std::vector<int64_t> got(test.document_length(0));
  test.copy_tokens(0, 0, got.size(), got.data());
  EXPECT_EQ(got, std::vector<int64_t>(expected.begin(), expected.end()));
  const auto& skipped = train.record().skipped;
  ASSERT_EQ(skipped.size(), 2u);
  EXPECT_EQ(skipped[0].path, "train/200.txt");
  EXPECT_NE(skipped[0].reason.find("empty"), std::string::npos);
  EXPECT_NE(skipped[1].reason.find("NUL"), std::string::npos);
  EXPECT_FALSE(fs::exists(out / ".parts"));
  EXPECT_FALSE(fs::exists(out / ".progress.json"));

  const std::string manifest = read_file(out / "manifest.json");
  const PrepareSummary second = prepare_data(options(out));
  EXPECT_EQ(second.splits.at("train").shards_reused, second.splits.at("train").shards);
  EXPECT_EQ(second.bytes_tokenized, 0u);
  EXPECT_EQ(read_file(out / "manifest.json"), manifest);

  // The same input prepared elsewhere gives the same shards, byte for byte.
  const fs::path other = dir_.path() / "other";
  PrepareOptions single = options(other);
  single.threads = 1;
  prepare_data(single);
  const Manifest a = read_manifest(out), b = read_manifest(other);
  ASSERT_EQ(a.splits.at("train").shards.size(), b.splits.at("train").shards.size());
  for (size_t s = 0; s < a.splits.at("train").shards.size(); ++s)
    EXPECT_EQ(a.splits.at("train").shards[s].sha256, b.splits.at("train").shards[s].sha256);

  // Packed reading over the prepared split sees BOS doc EOS in order.
  PackedSequenceReader reader(train, 16, tokenizer.bos_id(), tokenizer.eos_id(), 7);
  std::vector<int64_t> head(5);
  reader.read_stream(0, head.size(), head.data());
  EXPECT_EQ(head[0], tokenizer.bos_id());
  std::vector<int64_t> first_doc(4);
  train.copy_tokens(0, 0, 4, first_doc.data());
  EXPECT_EQ(std::vector<int64_t>(head.begin() + 1, head.end()), first_doc);
}

TEST_F(PrepareTest, ChangedBookRedoesOnlyItsShard) {
  const fs::path out = dir_.path() / "out";
  const PrepareSummary first = prepare_data(options(out));
  write(root() / "train" / "105.txt", book_text(55, 40));
  const PrepareSummary second = prepare_data(options(out));
  EXPECT_EQ(second.splits.at("train").shards_reused, first.splits.at("train").shards - 1);
  const Tokenizer tokenizer(tokenizer_path());
  const PreparedSplit train(out, "train", "", true);
  const std::vector<int32_t> expected = tokenizer.encode(book_text(55, 40));
  std::vector<int64_t> got(train.document_length(5));
  train.copy_tokens(5, 0, got.size(), got.data());
  EXPECT_EQ(got, std::vector<int64_t>(expected.begin(), expected.end()));
}

TEST_F(PrepareTest, DifferentTokenizerIsRefused) {
  const fs::path out = dir_.path() / "out";
  prepare_data(options(out));
  const std::string before = read_file(out / "manifest.json");
  TokenizerTrainOptions train;
  train.inputs = {root()};
  train.vocab_size = 300;
  train.output_prefix = dir_.path() / "other";
  train_tokenizer(train);
  PrepareOptions again = options(out);
  again.tokenizer = dir_.path() / "other.model";
  try {
    prepare_data(again);
    FAIL() << "a different tokenizer must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sha256"), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_file(out / "manifest.json"), before);
  EXPECT_THROW(PreparedSplit(out, "train", Tokenizer(again.tokenizer).sha256()), Error);
}

TEST(PreparedSplit, MissingManifestSaysWhatToDo) {
  TempDir dir;
  try {
    PreparedSplit split(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prepare-data"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace longtune::data
