// Unit tests for data/token_shard: writer/reader round trips in both widths, the exact on-disk
// layout, crash safety of an unfinished writer, and every malformed header, size and index the
// reader must reject with an Error naming the file.
#include "data/token_shard.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "common/check.h"
#include "tests/test_support.h"

namespace longtune::data {
namespace {

using longtune::testing::expect_error;
using longtune::testing::read_bytes;

namespace fs = std::filesystem;

void write_bytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <typename T>
void put(std::string& bytes, size_t offset, T value) {
  ASSERT_LE(offset + sizeof(T), bytes.size());
  std::memcpy(bytes.data() + offset, &value, sizeof(T));
}

template <typename T>
T get(const std::string& bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// Header field offsets (see the layout in token_shard.h).
constexpr size_t kVersionAt = 8, kTokenBytesAt = 12, kTokenCountAt = 16, kDocCountAt = 24,
                 kTokensOffsetAt = 32, kIndexOffsetAt = 40, kReservedAt = 48;

class TokenShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::path(::testing::TempDir()) / "token_shard_test_XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  // data_tests does not link LibTorch, so remove_all is safe here.
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_shard(const std::string& name, TokenWidth width,
                       const std::vector<std::vector<int32_t>>& docs) {
    const fs::path path = dir_ / name;
    TokenShardWriter writer(path, width);
    for (const auto& d : docs) writer.add_document(d);
    writer.finish();
    return path;
  }

  // A valid three-document uint16 shard's bytes, to corrupt.
  std::string valid_bytes() {
    return read_bytes(write_shard("valid.bin", TokenWidth::kUInt16, {{1, 2, 3}, {}, {4, 5}}));
  }

  // Writes `bytes` as a shard and expects opening it to fail naming the file and `what`.
  void expect_corrupt(const std::string& bytes, const std::string& what) {
    const fs::path path = dir_ / "corrupt.bin";
    write_bytes(path, bytes);
    expect_error([&] { TokenShard shard(path); }, {path.string(), what});
  }

  fs::path dir_;
};

TEST_F(TokenShardTest, WidthForVocab) {
  EXPECT_EQ(token_width_for_vocab(32000), TokenWidth::kUInt16);
  EXPECT_EQ(token_width_for_vocab(65536), TokenWidth::kUInt16);
  EXPECT_EQ(token_width_for_vocab(65537), TokenWidth::kUInt32);
  EXPECT_EQ(token_width_for_vocab(128256), TokenWidth::kUInt32);
  EXPECT_STREQ(to_string(TokenWidth::kUInt16), "uint16");
  EXPECT_STREQ(to_string(TokenWidth::kUInt32), "uint32");
  expect_error([] { token_width_for_vocab(0); }, {"vocabulary size", "0"});
}

TEST_F(TokenShardTest, RoundTripUInt16) {
  const std::vector<std::vector<int32_t>> docs = {{0, 1, 65535}, {}, {7}, {300, 301, 302, 303}};
  const fs::path path = write_shard("a.bin", TokenWidth::kUInt16, docs);
  TokenShard shard(path);
  EXPECT_EQ(shard.path(), path);
  EXPECT_EQ(shard.width(), TokenWidth::kUInt16);
  EXPECT_EQ(shard.doc_count(), 4u);
  EXPECT_EQ(shard.token_count(), 8u);
  for (size_t d = 0; d < docs.size(); ++d) {
    EXPECT_EQ(shard.document_length(d), docs[d].size());
    EXPECT_EQ(shard.document(d), docs[d]);
  }
  std::vector<int64_t> out(2, -1);
  shard.copy_tokens(3, 1, 2, out.data());
  EXPECT_EQ(out, (std::vector<int64_t>{301, 302}));
  shard.copy_tokens(1, 0, 0, out.data());  // empty range of an empty document is fine

  // Exact layout: header, 8 tokens * 2 bytes = 16 (already aligned), index of 5 u64.
  const std::string bytes = read_bytes(path);
  EXPECT_EQ(bytes.size(), 64u + 16u + 5u * 8u);
  EXPECT_EQ(bytes.substr(0, 8), "LTTOKENS");
  EXPECT_EQ(get<uint32_t>(bytes, kVersionAt), 1u);
  EXPECT_EQ(get<uint32_t>(bytes, kTokenBytesAt), 2u);
  EXPECT_EQ(get<uint64_t>(bytes, kTokenCountAt), 8u);
  EXPECT_EQ(get<uint64_t>(bytes, kDocCountAt), 4u);
  EXPECT_EQ(get<uint64_t>(bytes, kTokensOffsetAt), 64u);
  EXPECT_EQ(get<uint64_t>(bytes, kIndexOffsetAt), 80u);
  EXPECT_EQ(get<uint16_t>(bytes, 64 + 2 * 2), 65535);
  EXPECT_EQ(get<uint64_t>(bytes, 80 + 8 * 2), 3u);  // doc 2 starts after 3 + 0 tokens
  EXPECT_EQ(get<uint64_t>(bytes, 80 + 8 * 4), 8u);
}

TEST_F(TokenShardTest, RoundTripUInt32WithPadding) {
  const int32_t max_id = std::numeric_limits<int32_t>::max();
  const std::vector<std::vector<int32_t>> docs = {{65536, 128000, max_id}, {0}, {5, 6, 7}};
  const fs::path path = write_shard("b.bin", TokenWidth::kUInt32, docs);
  TokenShard shard(path);
  EXPECT_EQ(shard.width(), TokenWidth::kUInt32);
  EXPECT_EQ(shard.token_count(), 7u);
  for (size_t d = 0; d < docs.size(); ++d) EXPECT_EQ(shard.document(d), docs[d]);
  std::vector<int64_t> out(1);
  shard.copy_tokens(0, 2, 1, out.data());
  EXPECT_EQ(out[0], max_id);
  // 7 tokens * 4 = 28 bytes, padded to 32.
  const std::string bytes = read_bytes(path);
  EXPECT_EQ(get<uint64_t>(bytes, kIndexOffsetAt), 64u + 32u);
  EXPECT_EQ(bytes.size(), 64u + 32u + 4u * 8u);
  EXPECT_EQ(get<uint32_t>(bytes, 64 + 28), 0u);  // padding is zero
}

TEST_F(TokenShardTest, OddTokenCountIsPaddedUInt16) {
  const fs::path path = write_shard("c.bin", TokenWidth::kUInt16, {{9, 8, 7}});
  const std::string bytes = read_bytes(path);
  EXPECT_EQ(get<uint64_t>(bytes, kIndexOffsetAt), 72u);  // 64 + round_up_8(6)
  EXPECT_EQ(bytes.size(), 72u + 2u * 8u);
  EXPECT_EQ(TokenShard(path).document(0), (std::vector<int32_t>{9, 8, 7}));
}

TEST_F(TokenShardTest, DocumentsLargerThanTheWriteBuffer) {
  // 700k uint16 tokens = 1.4 MB, past the writer's 1 MiB buffer, split over several documents.
  std::vector<std::vector<int32_t>> docs;
  int32_t next = 0;
  for (size_t len : {300000u, 1u, 400000u}) {
    std::vector<int32_t> d(len);
    for (auto& t : d) t = static_cast<int32_t>((static_cast<uint32_t>(next++) * 7919u) & 0xFFFFu);  // unsigned: wraps
    docs.push_back(std::move(d));
  }
  const fs::path path = write_shard("big.bin", TokenWidth::kUInt16, docs);
  TokenShard shard(path);
  ASSERT_EQ(shard.doc_count(), 3u);
  for (size_t d = 0; d < docs.size(); ++d) EXPECT_EQ(shard.document(d), docs[d]) << d;
}

TEST_F(TokenShardTest, EmptyShardIsValid) {
  const fs::path path = write_shard("empty.bin", TokenWidth::kUInt16, {});
  TokenShard shard(path);
  EXPECT_EQ(shard.doc_count(), 0u);
  EXPECT_EQ(shard.token_count(), 0u);
  EXPECT_EQ(fs::file_size(path), 64u + 8u);
  expect_error([&] { shard.document_length(0); }, {path.string(), "document 0 out of range"});

  TokenShard only_empty_docs(write_shard("empty_docs.bin", TokenWidth::kUInt32, {{}, {}}));
  EXPECT_EQ(only_empty_docs.doc_count(), 2u);
  EXPECT_EQ(only_empty_docs.document_length(1), 0u);
}

TEST_F(TokenShardTest, UnfinishedWriterLeavesNoFile) {
  const fs::path path = dir_ / "unfinished.bin";
  {
    TokenShardWriter writer(path, TokenWidth::kUInt16);
    writer.add_document(std::vector<int32_t>{1, 2, 3});
    EXPECT_EQ(writer.doc_count(), 1u);
    EXPECT_EQ(writer.token_count(), 3u);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir_)) << "the temporary file was left behind";
}

TEST_F(TokenShardTest, NothingAppearsBeforeFinish) {
  const fs::path path = dir_ / "pending.bin";
  TokenShardWriter writer(path, TokenWidth::kUInt16);
  writer.add_document(std::vector<int32_t>{1});
  EXPECT_FALSE(fs::exists(path));
  writer.finish();
  EXPECT_TRUE(fs::exists(path));
  expect_error([&] { writer.finish(); }, {path.string(), "twice"});
  expect_error([&] { writer.add_document(std::vector<int32_t>{2}); },
               {path.string(), "after finish"});
}

TEST_F(TokenShardTest, IdOutOfRangeIsRejectedAndTheDocumentDropped) {
  const fs::path path = dir_ / "range.bin";
  TokenShardWriter writer(path, TokenWidth::kUInt16);
  writer.add_document(std::vector<int32_t>{1, 2});
  expect_error(
      [&] {
        writer.add_document(std::vector<int32_t>{3, 65536});
      },
      {path.string(), "65536", "uint16"});
  expect_error([&] { writer.add_document(std::vector<int32_t>{-1}); }, {path.string(), "-1"});
  writer.add_document(std::vector<int32_t>{65535});
  writer.finish();
  TokenShard shard(path);
  ASSERT_EQ(shard.doc_count(), 2u);
  EXPECT_EQ(shard.document(0), (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(shard.document(1), (std::vector<int32_t>{65535}));

  TokenShardWriter wide(dir_ / "range32.bin", TokenWidth::kUInt32);
  expect_error(
      [&] {
        wide.add_document(std::vector<int32_t>{5, -7});
      },
      {"range32.bin", "-7", "uint32"});
}

TEST_F(TokenShardTest, ReadRangeChecks) {
  const fs::path path = write_shard("r.bin", TokenWidth::kUInt16, {{1, 2, 3}});
  TokenShard shard(path);
  std::vector<int64_t> out(4);
  expect_error([&] { shard.copy_tokens(0, 2, 2, out.data()); }, {path.string(), "out of range"});
  expect_error([&] { shard.copy_tokens(0, 4, 0, out.data()); }, {path.string(), "out of range"});
  expect_error([&] { shard.copy_tokens(1, 0, 0, out.data()); }, {path.string(), "document 1"});
}

TEST_F(TokenShardTest, MissingOrNonRegularFile) {
  expect_error([&] { TokenShard shard(dir_ / "nope.bin"); }, {"nope.bin", "cannot open"});
  expect_error([&] { TokenShard shard(dir_); }, {dir_.string(), "not a regular file"});
}

TEST_F(TokenShardTest, CorruptHeader) {
  const std::string good = valid_bytes();
  ASSERT_NO_THROW(TokenShard(dir_ / "valid.bin"));

  std::string b = good;
  b[0] = 'X';
  expect_corrupt(b, "bad magic");

  b = good;
  put<uint32_t>(b, kVersionAt, 2);
  expect_corrupt(b, "version 2");

  b = good;
  put<uint32_t>(b, kTokenBytesAt, 3);
  expect_corrupt(b, "token_bytes is 3");

  b = good;
  put<uint32_t>(b, kTokenBytesAt, 4);  // same file read as uint32: index no longer where it says
  expect_corrupt(b, "index_offset");

  b = good;
  put<uint64_t>(b, kTokensOffsetAt, 72);
  expect_corrupt(b, "tokens_offset is 72");

  b = good;
  b[kReservedAt + 5] = 1;
  expect_corrupt(b, "reserved");

  b = good;
  put<uint64_t>(b, kTokenCountAt, std::numeric_limits<uint64_t>::max() / 2);  // would overflow
  expect_corrupt(b, "token_count");

  b = good;
  put<uint64_t>(b, kTokenCountAt, 6);  // still pads to the same index offset; index disagrees
  expect_corrupt(b, "last index entry is 5, expected token_count 6");

  b = good;
  put<uint64_t>(b, kTokenCountAt, 9);  // moves the implied index offset
  expect_corrupt(b, "index_offset");

  b = good;
  put<uint64_t>(b, kIndexOffsetAt, get<uint64_t>(good, kIndexOffsetAt) + 8);
  expect_corrupt(b, "index_offset");

  b = good;
  put<uint64_t>(b, kDocCountAt, std::numeric_limits<uint64_t>::max());
  expect_corrupt(b, "doc_count");

  b = good;
  put<uint64_t>(b, kDocCountAt, 4);
  expect_corrupt(b, "implies");

  b = good;
  put<uint64_t>(b, kDocCountAt, 2);
  expect_corrupt(b, "implies");
}

TEST_F(TokenShardTest, CorruptSize) {
  const std::string good = valid_bytes();
  expect_corrupt("", "shorter than the 64-byte header");
  expect_corrupt(good.substr(0, 63), "shorter than the 64-byte header");
  expect_corrupt(good.substr(0, 64), "implies");
  expect_corrupt(good.substr(0, good.size() - 8), "implies");
  expect_corrupt(good.substr(0, good.size() - 1), "implies");
  expect_corrupt(good + std::string(1, '\0'), "implies");
  expect_corrupt(good + std::string(8, '\0'), "implies");
}

TEST_F(TokenShardTest, CorruptIndex) {
  const std::string good = valid_bytes();  // tokens {1,2,3},{},{4,5}: index 0,3,3,5
  const size_t index_at = get<uint64_t>(good, kIndexOffsetAt);
  ASSERT_EQ(get<uint64_t>(good, index_at + 8 * 3), 5u);

  std::string b = good;
  put<uint64_t>(b, index_at, 1);
  expect_corrupt(b, "index[0] is 1");

  b = good;
  put<uint64_t>(b, index_at + 8 * 2, 2);  // 0,3,2,5
  expect_corrupt(b, "index decreases at document 1");

  b = good;
  put<uint64_t>(b, index_at + 8 * 1, 6);  // 0,6,3,5
  expect_corrupt(b, "index decreases at document 1");

  b = good;
  put<uint64_t>(b, index_at + 8 * 3, 4);
  expect_corrupt(b, "last index entry is 4");
}

}  // namespace
}  // namespace longtune::data
