#include "data/line_reader.h"

#include <zstd.h>

#include <cerrno>
#include <cstring>

#include "common/check.h"

namespace longtune::data {
namespace fs = std::filesystem;

LineReader::LineReader(const fs::path& path) : path_(path), in_(path, std::ios::binary) {
  LT_CHECK(in_.good(), "{}: cannot open: {}", path.string(), std::strerror(errno));
  const std::string name = path.filename().string();
  compressed_ = name.size() >= 4 && name.compare(name.size() - 4, 4, ".zst") == 0;
  if (compressed_) {
    stream_ = ZSTD_createDStream();
    LT_CHECK(stream_ != nullptr, "{}: zstd init failed", path.string());
    ZSTD_initDStream(stream_);
    input_buffer_.resize(ZSTD_DStreamInSize());
    output_buffer_.resize(ZSTD_DStreamOutSize());
  }
}

LineReader::~LineReader() {
  if (stream_ != nullptr) ZSTD_freeDStream(stream_);
}

bool LineReader::next_line(std::string& line) {
  line.clear();
  while (true) {
    const size_t newline = pending_.find('\n', pending_offset_);
    if (newline != std::string::npos) {
      line.assign(pending_, pending_offset_, newline - pending_offset_);
      pending_offset_ = newline + 1;
      return true;
    }
    pending_.erase(0, pending_offset_);
    pending_offset_ = 0;
    if (!fill()) {
      if (pending_.empty()) return false;
      line = std::move(pending_);
      pending_.clear();
      return true;
    }
  }
}

bool LineReader::fill() {
  if (!compressed_) {
    char buffer[1 << 16];
    in_.read(buffer, sizeof buffer);
    LT_CHECK(!in_.bad(), "{}: read failed", path_.string());
    pending_.append(buffer, static_cast<size_t>(in_.gcount()));
    return in_.gcount() > 0;
  }
  while (true) {
    if (input_pos_ == input_size_) {
      in_.read(input_buffer_.data(), static_cast<std::streamsize>(input_buffer_.size()));
      LT_CHECK(!in_.bad(), "{}: read failed", path_.string());
      input_src_ = input_buffer_.data();
      input_size_ = static_cast<size_t>(in_.gcount());
      input_pos_ = 0;
      if (input_size_ == 0) {
        LT_CHECK(last_result_ == 0, "{}: truncated zstd stream", path_.string());
        return false;
      }
    }
    ZSTD_inBuffer input{input_src_, input_size_, input_pos_};
    ZSTD_outBuffer output{output_buffer_.data(), output_buffer_.size(), 0};
    last_result_ = ZSTD_decompressStream(stream_, &output, &input);
    input_pos_ = input.pos;
    LT_CHECK(!ZSTD_isError(last_result_), "{}: zstd: {}", path_.string(), ZSTD_getErrorName(last_result_));
    if (output.pos > 0) {
      pending_.append(output_buffer_.data(), output.pos);
      return true;
    }
  }
}

}  // namespace longtune::data
