// Reading books as Python's open(encoding="utf-8", errors="replace").read() does, refusing what is not
// book text, and laying out inputs. Expected strings were produced by CPython 3.11's decoder.
#include "data/text_source.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <zstd.h>

#include <fstream>

#include "common/check.h"
#include "tests/test_support.h"

namespace longtune::data {
namespace {

using longtune::testing::TempDir;
namespace fs = std::filesystem;

const std::string kFffd = "\xEF\xBF\xBD";

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

TEST(RepairUtf8, MatchesPythonReplaceHandler) {
  const std::vector<std::tuple<std::string, std::string, int>> cases = {
      {"ok", "ok", 0},
      {"\xe2\x82", kFffd, 1},
      {"\xe2\x82" "A", kFffd + "A", 1},
      {"\x80\x80", repeat(kFffd, 2), 2},
      {"\xe0\x80\xaf", repeat(kFffd, 3), 3},
      {"\xed\xa0\x80", repeat(kFffd, 3), 3},  // a surrogate
      {"\xf0\x9f\x98", kFffd, 1},             // truncated 4-byte sequence
      {"\xf4\x90\x80\x80", repeat(kFffd, 4), 4},  // above U+10FFFF
      {"\xc0\xaf", repeat(kFffd, 2), 2},          // overlong
      {"a\xff" "b", "a" + kFffd + "b", 1},
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80", 0},
      {"\xc3", kFffd, 1},
  };
  for (const auto& [input, expected, count] : cases) {
    std::string text = input;
    EXPECT_EQ(repair_utf8(text), static_cast<uint64_t>(count)) << input;
    EXPECT_EQ(text, expected);
  }
}

TEST(CleanText, UniversalNewlinesAndRejections) {
  TextDocument crlf = clean_text("a\r\nb\rc\n", 1 << 20);
  EXPECT_EQ(crlf.text, "a\nb\nc\n");
  EXPECT_EQ(crlf.newlines_converted, 2u);
  EXPECT_TRUE(crlf.skip_reason.empty());

  EXPECT_NE(clean_text(std::string("ab\0cd", 5), 1 << 20).skip_reason.find("NUL"), std::string::npos);
  EXPECT_NE(clean_text("", 1 << 20).skip_reason.find("empty"), std::string::npos);
  EXPECT_NE(clean_text(" \n\t\r\n", 1 << 20).skip_reason.find("empty"), std::string::npos);

  const TextDocument long_line = clean_text("short\n" + std::string(101, 'x') + "\n", 100);
  EXPECT_NE(long_line.skip_reason.find("line 2 is 101 bytes"), std::string::npos) << long_line.skip_reason;
  EXPECT_TRUE(clean_text("short\n" + std::string(100, 'x'), 100).skip_reason.empty());
}

TEST(ReadTextDocument, ReportsUnreadableAsRetryable) {
  TempDir dir;
  fs::create_directory(dir.path() / "folder.txt");
  const TextDocument folder = read_text_document(dir.path() / "folder.txt", 1 << 20);
  EXPECT_FALSE(folder.skip_reason.empty());
  EXPECT_TRUE(folder.retry_later);
  const TextDocument missing = read_text_document(dir.path() / "missing.txt", 1 << 20);
  EXPECT_NE(missing.skip_reason.find("cannot open"), std::string::npos);
  EXPECT_TRUE(missing.retry_later);
}

TEST(DiscoverInputs, Pg19LayoutWithMetadataAndMissingSplit) {
  TempDir dir;
  dir.write("train/2.txt", "two");
  dir.write("train/10.txt", "ten");
  dir.write("test/5.txt", "five");
  dir.write("train/notes.md", "ignored");
  dir.write("metadata.csv", "2,\"Smith, John: A Tale\",1850,http://x/2\n10,Plain,1900,http://x/10\n");
  const InputLayout layout = discover_inputs(dir.path(), {}, "train");
  EXPECT_EQ(layout.kind, InputKind::kPg19);
  ASSERT_EQ(layout.splits.size(), 2u);
  EXPECT_EQ(layout.splits[0].name, "train");
  ASSERT_EQ(layout.splits[0].files.size(), 2u);
  EXPECT_EQ(layout.splits[0].files[0].relative_path, "train/10.txt");  // sorted by path
  EXPECT_EQ(layout.splits[0].files[0].title, "Plain");
  EXPECT_EQ(layout.splits[0].files[1].title, "Smith, John: A Tale");
  EXPECT_EQ(layout.splits[1].name, "test");
  ASSERT_EQ(layout.warnings.size(), 1u);
  EXPECT_NE(layout.warnings[0].find("validation"), std::string::npos);

  try {
    discover_inputs(dir.path(), {"validation"}, "train");
    FAIL() << "a requested missing split must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("split 'validation' requested"), std::string::npos) << e.what();
  }
  EXPECT_THROW(discover_inputs(dir.path() / "nope", {}, "train"), Error);
}

TEST(DiscoverInputs, FolderFileAndBrokenLink) {
  TempDir dir;
  dir.write("a.txt", "alpha");
  fs::create_symlink(dir.path() / "gone.txt", dir.path() / "b.txt");
  const InputLayout folder = discover_inputs(dir.path(), {}, "books");
  EXPECT_EQ(folder.kind, InputKind::kTextFolder);
  ASSERT_EQ(folder.splits.size(), 1u);
  EXPECT_EQ(folder.splits[0].name, "books");
  ASSERT_EQ(folder.splits[0].files.size(), 2u);
  EXPECT_TRUE(folder.splits[0].files[0].readable);
  EXPECT_FALSE(folder.splits[0].files[1].readable);  // reported, not silently dropped
  const InputLayout file = discover_inputs(dir.path() / "a.txt", {}, "train");
  EXPECT_EQ(file.kind, InputKind::kTextFile);
  EXPECT_EQ(file.splits[0].files[0].relative_path, "a.txt");
}

TEST(MetadataCsv, MalformedRowNamesLine) {
  TempDir dir;
  dir.write("metadata.csv", "1,Fine,1800,u\n2,Too,few\n");
  try {
    read_metadata_csv(dir.path() / "metadata.csv");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("metadata.csv:2"), std::string::npos) << e.what();
  }
}

TEST(ReadJsonl, PlainAndZstdWithBadRecords) {
  TempDir dir;
  const std::string content =
      "{\"text\": \"first\\r\\nline\", \"meta\": {}}\n"
      "not json\n"
      "{\"no_text\": 1}\n"
      "\n"
      "{\"text\": \"second \\u00e9\"}";  // no final newline
  dir.write("a.jsonl", content);
  std::string compressed(ZSTD_compressBound(content.size()), '\0');
  compressed.resize(ZSTD_compress(compressed.data(), compressed.size(), content.data(), content.size(), 3));
  dir.write("a.jsonl.zst", compressed);
  for (const char* name : {"a.jsonl", "a.jsonl.zst"}) {
    std::vector<std::string> texts;
    std::vector<uint64_t> bad_lines;
    read_jsonl(dir.path() / name, [&](uint64_t, std::string text) { texts.push_back(std::move(text)); },
               [&](uint64_t line, const std::string&) { bad_lines.push_back(line); });
    ASSERT_EQ(texts.size(), 2u) << name;
    EXPECT_EQ(texts[0], "first\r\nline");  // JSON text is taken as is
    EXPECT_EQ(texts[1], "second \xc3\xa9");
    EXPECT_EQ(bad_lines, (std::vector<uint64_t>{2, 3}));
  }
  dir.write("broken.jsonl.zst", compressed.substr(0, compressed.size() / 2));
  EXPECT_THROW(read_jsonl(dir.path() / "broken.jsonl.zst", [](uint64_t, std::string) {},
                          [](uint64_t, const std::string&) {}),
               Error);
}

}  // namespace
}  // namespace longtune::data
