// common/file_io: AtomicFile's SHA-256, computed while the bytes are written in blocks, equals
// the SHA-256 of the file on disk for every way writes can meet the block boundaries; writes land
// intact and in order; an uncommitted file leaves nothing; write_at is refused on a hashing file.
#include "common/file_io.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "tests/test_support.h"

namespace longtune {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;
using testing::read_bytes;
using testing::TempDir;

constexpr size_t kBlock = AtomicFile::kWriteBlockBytes;

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 random(seed);
  std::string bytes(n, '\0');
  for (char& c : bytes) c = static_cast<char>(random() & 0xff);
  return bytes;
}

// Writes `content` in pieces of the given sizes (the last one takes the rest).
FileDigest write_in_pieces(const fs::path& path, const std::string& content, const std::vector<size_t>& pieces) {
  AtomicFile file(path, /*sha256=*/true);
  size_t at = 0;
  for (const size_t piece : pieces) {
    const size_t take = std::min(piece, content.size() - at);
    file.write(content.data() + at, take);
    at += take;
  }
  file.write(content.data() + at, content.size() - at);
  EXPECT_EQ(file.bytes_written(), content.size());
  return file.commit();
}

TEST(AtomicFile, HashWhileWritingEqualsTheHashOfTheFileOnDisk) {
  TempDir dir;
  const std::string content = random_bytes(3 * kBlock + 12345, 7);
  // Empty; below a block; exactly a block; small writes crossing boundaries; a big write straight
  // from the caller's memory after a partly filled buffer; one big write with a tail.
  const std::vector<std::pair<size_t, std::vector<size_t>>> cases = {
      {0, {}},
      {1000, {10, 990}},
      {kBlock, {}},
      {kBlock + 1, {kBlock}},
      {content.size(), {100, kBlock - 100, 1, 2 * kBlock}},
      {content.size(), {4096, 3 * kBlock}},
      {content.size(), {}},
  };
  int i = 0;
  for (const auto& [size, pieces] : cases) {
    SCOPED_TRACE(::testing::Message() << "case " << i << ": " << size << " bytes");
    const fs::path path = dir.path() / ("file" + std::to_string(i++));
    const std::string expected = content.substr(0, size);
    const FileDigest digest = write_in_pieces(path, expected, pieces);
    EXPECT_EQ(digest.bytes, size);
    EXPECT_EQ(digest.sha256, sha256_file(path));
    EXPECT_EQ(digest.sha256, sha256_hex(expected));
    EXPECT_EQ(read_bytes(path), expected);
  }
  // The digest of the empty string, as sha256sum prints it.
  EXPECT_EQ(write_file_atomic(dir.path() / "empty", "").sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// The two write paths give the same bytes and digest: O_DIRECT blocks (where the file system takes
// them; the test's temporary directory on most disks) and buffered blocks with early writeback.
TEST(AtomicFile, DirectAndBufferedWritesGiveTheSameFileAndDigest) {
  TempDir dir;
  const std::string content = random_bytes(2 * kBlock + 777, 11);
  for (const bool direct_io : {true, false}) {
    const fs::path path = dir.path() / (direct_io ? "direct" : "buffered");
    AtomicFile file(path, /*sha256=*/true, /*sync_directory=*/true, direct_io);
    file.write(content.data(), content.size());
    const FileDigest digest = file.commit();
    std::printf("%s: blocks written %s\n", path.c_str(), file.direct_io() ? "with O_DIRECT" : "buffered");
    if (!direct_io) EXPECT_FALSE(file.direct_io());
    EXPECT_EQ(digest.bytes, content.size());
    EXPECT_EQ(digest.sha256, sha256_hex(content)) << path;
    EXPECT_EQ(read_bytes(path), content) << path;
  }
}

TEST(AtomicFile, WithoutHashingNoDigestAndWriteAtWorks) {
  TempDir dir;
  const fs::path path = dir.path() / "plain";
  AtomicFile file(path);
  file.write(std::string(kBlock + 10, 'a'));
  file.write_at(0, "HEAD", 4);
  const FileDigest digest = file.commit();
  EXPECT_EQ(digest.bytes, kBlock + 10);
  EXPECT_EQ(digest.sha256, "");
  EXPECT_EQ(read_bytes(path), "HEAD" + std::string(kBlock + 6, 'a'));
}

TEST(AtomicFile, WriteAtIsRefusedOnAHashingFileAndUncommittedLeavesNothing) {
  TempDir dir;
  const fs::path path = dir.path() / "hashed";
  {
    AtomicFile file(path, /*sha256=*/true);
    file.write("0123456789");
    expect_error([&] { file.write_at(0, "x", 1); }, {path.string(), "write_at"});
  }
  EXPECT_FALSE(fs::exists(path));
  for (const auto& entry : fs::directory_iterator(dir.path())) ADD_FAILURE() << "left behind: " << entry.path();
}

}  // namespace
}  // namespace longtune
