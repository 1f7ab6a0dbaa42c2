// import-tokens on small generated inputs: JSONL ids (plain and zstd) and a .bin with offsets come
// back as the same documents through PreparedSplit, bad lines are errors naming file:line, and a
// rerun keeps its finished shards. The oracle-level checks (numpy-written inputs, kill -9) are in
// tests/reference/test_import_tokens.py.
#include "data/import_tokens.h"

#include <gtest/gtest.h>
#include <zstd.h>

#include <cstring>

#include "common/file_io.h"
#include "data/line_reader.h"
#include "data/prepared_data.h"
#include "tests/test_support.h"

namespace longtune::data {
namespace {

using longtune::testing::TempDir;
namespace fs = std::filesystem;

ImportOptions options_for(const TempDir& dir, std::vector<fs::path> inputs) {
  ImportOptions options;
  options.inputs = std::move(inputs);
  options.vocab_size = 1000;
  options.bos_id = 1;
  options.eos_id = 2;
  options.output = dir.path() / "out";
  return options;
}

std::vector<std::vector<int64_t>> read_back(const fs::path& out) {
  const PreparedSplit split(out, "train", "", /*verify_checksums=*/true);
  std::vector<std::vector<int64_t>> docs;
  for (uint64_t d = 0; d < split.num_documents(); ++d) {
    std::vector<int64_t> ids(split.document_length(d));
    split.copy_tokens(d, 0, ids.size(), ids.data());
    docs.push_back(ids);
  }
  return docs;
}

std::string zstd_compress(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
  return out;
}

TEST(ImportTokens, JsonlPlainAndZstdComeBackInSortedOrder) {
  TempDir dir;
  dir.write("in/b.jsonl.zst", zstd_compress("{\"input_ids\": [7, 8]}\n{\"input_ids\": [999]}"));  // no final newline
  dir.write("in/a.jsonl", "{\"ids\": [3, 4, 5]}\n\r\n{\"ids\": [0], \"source\": \"x\"}\n");
  const ImportSummary summary = import_tokens(options_for(dir, {dir.path() / "in"}));
  EXPECT_EQ(summary.documents, 4u);
  EXPECT_EQ(summary.tokens, 7u);
  EXPECT_EQ(read_back(dir.path() / "out"),
            (std::vector<std::vector<int64_t>>{{3, 4, 5}, {0}, {7, 8}, {999}}));
  const Manifest manifest = read_manifest(dir.path() / "out");
  EXPECT_EQ(manifest.input_kind, "token_jsonl");
  EXPECT_EQ(manifest.tokenizer.vocab_size, 1000);
  EXPECT_EQ(import_tokens(options_for(dir, {dir.path() / "in"})).shards_reused, 1u);
}

TEST(ImportTokens, BinWithOffsets) {
  TempDir dir;
  const uint32_t ids[] = {10, 11, 12, 13, 14, 15};
  const uint64_t bounds[] = {0, 2, 3, 6};
  dir.write("t.bin", std::string(reinterpret_cast<const char*>(ids), sizeof ids));
  dir.write("o.bin", std::string(reinterpret_cast<const char*>(bounds), sizeof bounds));
  ImportOptions options = options_for(dir, {dir.path() / "t.bin"});
  options.offsets = dir.path() / "o.bin";
  options.bin_width = TokenWidth::kUInt32;
  import_tokens(options);
  EXPECT_EQ(read_back(dir.path() / "out"), (std::vector<std::vector<int64_t>>{{10, 11}, {12}, {13, 14, 15}}));
}

TEST(ImportTokens, BadRecordsNameTheLineAndLeaveNoManifest) {
  TempDir dir;
  const std::pair<const char*, const char*> cases[] = {
      {"{\"ids\": [1000]}", "docs.jsonl:2: id 1000 at position 0 is not below the vocabulary size 1000"},
      {"{\"ids\": []}", "docs.jsonl:2: empty document"},
      {"[1, 2]", "docs.jsonl:2: not a JSON object"},
      {"{\"ids\": [true]}", "docs.jsonl:2: \"ids\"[0] is true, not a non-negative integer id"},
      {"{\"ids\": [18446744073709551615]}", "docs.jsonl:2: \"ids\"[0] = 18446744073709551615 is not an id"},
  };
  for (const auto& [line, message] : cases) {
    dir.write("docs.jsonl", std::string("{\"ids\": [1]}\n") + line + "\n");
    testing::expect_error([&] { import_tokens(options_for(dir, {dir.path() / "docs.jsonl"})); }, {message});
    EXPECT_FALSE(fs::exists(dir.path() / "out" / kManifestFileName)) << line;
  }
}

TEST(ImportTokens, ADifferentVocabularyIsRefusedOnRerun) {
  TempDir dir;
  dir.write("docs.jsonl", "{\"ids\": [1, 2]}\n");
  import_tokens(options_for(dir, {dir.path() / "docs.jsonl"}));
  ImportOptions other = options_for(dir, {dir.path() / "docs.jsonl"});
  other.vocab_size = 2000;
  testing::expect_error([&] { import_tokens(other); },
                        {"was prepared for vocab_size 1000", "declares vocab_size 2000"});
}

TEST(ImportTokens, AFailedRerunLeavesNoManifestClaimingRewrittenShards) {
  TempDir dir;
  dir.write("a/1.jsonl", "{\"ids\": [1, 2]}\n");
  dir.write("a/2.jsonl", "{\"ids\": [3]}\n");
  dir.write("b/1.jsonl", "{\"ids\": [7, 7, 7]}\n");
  dir.write("b/2.jsonl", "{\"ids\": [5000]}\n");  // fails after b's first shard is written
  ImportOptions a = options_for(dir, {dir.path() / "a"}), b = options_for(dir, {dir.path() / "b"});
  a.shard_source_bytes = b.shard_source_bytes = 1;  // a shard per file
  import_tokens(a);
  const std::string clean_manifest = read_file(dir.path() / "out" / kManifestFileName);
  testing::expect_error([&] { import_tokens(b); }, {"2.jsonl:1: id 5000"});
  EXPECT_FALSE(fs::exists(dir.path() / "out" / kManifestFileName));
  import_tokens(a);
  EXPECT_EQ(read_file(dir.path() / "out" / kManifestFileName), clean_manifest);
  EXPECT_EQ(read_back(dir.path() / "out"), (std::vector<std::vector<int64_t>>{{1, 2}, {3}}));
}

TEST(ImportTokens, SplitNamesAndVocabularySizesThatCannotWork) {
  TempDir dir;
  dir.write("docs.jsonl", "{\"ids\": [1]}\n");
  for (const char* name : {"..", ".", "", "a/b", ".hidden"}) {
    ImportOptions options = options_for(dir, {dir.path() / "docs.jsonl"});
    options.split_name = name;
    testing::expect_error([&] { import_tokens(options); }, {"split name"});
  }
  ImportOptions huge = options_for(dir, {dir.path() / "docs.jsonl"});
  huge.vocab_size = int64_t{5} << 30;
  testing::expect_error([&] { import_tokens(huge); }, {"32-bit"});
}

TEST(LineReader, TruncatedZstdIsANamedError) {
  TempDir dir;
  std::string compressed = zstd_compress(std::string(10000, 'x') + "\n");
  compressed.resize(compressed.size() / 2);
  dir.write("t.jsonl.zst", compressed);
  LineReader reader(dir.path() / "t.jsonl.zst");
  std::string line;
  testing::expect_error([&] { while (reader.next_line(line)) {} }, {"t.jsonl.zst: truncated zstd stream"});
}

}  // namespace
}  // namespace longtune::data
