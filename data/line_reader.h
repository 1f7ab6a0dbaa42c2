// Line-by-line reading of a plain or zstd-compressed (.zst) file: the JSONL inputs of prepare-data
// (text records) and import-tokens (id records). Lines end at '\n' (a '\r' before it is kept for
// the caller); the last line needs no newline. Not JSON parsing.
#pragma once

#include <cstddef>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

struct ZSTD_DCtx_s;

namespace longtune::data {

class LineReader {
 public:
  // Decompresses when the file name ends in ".zst". Throws longtune::Error naming the file if it
  // cannot be opened.
  explicit LineReader(const std::filesystem::path& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line into `line` (without its '\n'); false at the end. Throws longtune::Error naming
  // the file on a read error, a corrupt or a truncated zstd stream.
  bool next_line(std::string& line);

 private:
  bool fill();  // appends more decoded bytes to pending_; false at the end of the input

  std::filesystem::path path_;
  std::ifstream in_;
  bool compressed_ = false;
  ZSTD_DCtx_s* stream_ = nullptr;
  std::vector<char> input_buffer_, output_buffer_;
  const void* input_src_ = nullptr;  // the zstd input window into input_buffer_
  size_t input_size_ = 0, input_pos_ = 0;
  size_t last_result_ = 0;
  std::string pending_;
  size_t pending_offset_ = 0;
};

}  // namespace longtune::data
