// Token shard writer (streamed through AtomicFile) and reader (mmap + full validation). Every
// malformed file is a longtune::Error naming the path and what is wrong; all size arithmetic is
// overflow-checked. The layout is documented in token_shard.h.
#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>

#include "common/check.h"

namespace longtune::data {

// The file is little-endian and read in place through the mapping.
static_assert(std::endian::native == std::endian::little,
              "token shards assume a little-endian host");

namespace {

constexpr size_t kWriteBufferBytes = 1 << 20;

struct ShardHeader {
  char magic[8];
  uint32_t version;
  uint32_t token_bytes;
  uint64_t token_count;
  uint64_t doc_count;
  uint64_t tokens_offset;
  uint64_t index_offset;
  unsigned char reserved[16];
};
static_assert(sizeof(ShardHeader) == kShardHeaderBytes);

uint64_t round_up_8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

std::string errno_text() { return std::strerror(errno); }

// Closes an fd on scope exit.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

TokenWidth token_width_for_vocab(int64_t vocab_size) {
  LT_CHECK(vocab_size > 0, "vocabulary size must be positive, got {}", vocab_size);
  return vocab_size <= 65536 ? TokenWidth::kUInt16 : TokenWidth::kUInt32;
}

const char* to_string(TokenWidth width) {
  switch (width) {
    case TokenWidth::kUInt16:
      return "uint16";
    case TokenWidth::kUInt32:
      return "uint32";
  }
  return "invalid";
}

// ---------------------------------------------------------------------------------------------
// Writer

TokenShardWriter::TokenShardWriter(const std::filesystem::path& path, TokenWidth width)
    : file_(path), width_(width) {
  LT_CHECK(width == TokenWidth::kUInt16 || width == TokenWidth::kUInt32,
           "{}: invalid token width {}", path.string(), static_cast<uint32_t>(width));
  // Placeholder; the real header (counts, index offset) is known only at finish().
  const ShardHeader zero{};
  file_.write(&zero, sizeof(zero));
  buffer_.reserve(kWriteBufferBytes);
}

void TokenShardWriter::add_document(std::span<const int32_t> tokens) {
  LT_CHECK(!finished_, "{}: add_document after finish", file_.path().string());
  // Validate the whole document first so a rejected one leaves the shard as it was.
  const int64_t max_id =
      width_ == TokenWidth::kUInt16 ? 0xFFFF : std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i < tokens.size(); ++i) {
    LT_CHECK(tokens[i] >= 0 && tokens[i] <= max_id,
             "{}: token id {} (document {}, position {}) does not fit {} (0..{})",
             file_.path().string(), tokens[i], doc_count(), i, to_string(width_), max_id);
  }
  const size_t token_bytes = static_cast<size_t>(width_);
  size_t done = 0;
  while (done < tokens.size()) {
    if (buffer_.size() == kWriteBufferBytes) {
      file_.write(buffer_.data(), buffer_.size());
      buffer_.clear();
    }
    const size_t room = (kWriteBufferBytes - buffer_.size()) / token_bytes;
    const size_t n = std::min(room, tokens.size() - done);
    const size_t old_size = buffer_.size();
    buffer_.resize(old_size + n * token_bytes);
    unsigned char* dst = buffer_.data() + old_size;
    if (width_ == TokenWidth::kUInt16) {
      for (size_t i = 0; i < n; ++i) {
        const auto id = static_cast<uint16_t>(tokens[done + i]);
        std::memcpy(dst + 2 * i, &id, 2);
      }
    } else {
      for (size_t i = 0; i < n; ++i) {
        const auto id = static_cast<uint32_t>(tokens[done + i]);
        std::memcpy(dst + 4 * i, &id, 4);
      }
    }
    done += n;
  }
  token_count_ += tokens.size();
  offsets_.push_back(token_count_);
}

void TokenShardWriter::finish() {
  LT_CHECK(!finished_, "{}: finish called twice", file_.path().string());
  finished_ = true;
  if (!buffer_.empty()) file_.write(buffer_.data(), buffer_.size());
  buffer_.clear();
  buffer_.shrink_to_fit();

  const uint64_t tokens_end = kShardHeaderBytes + token_count_ * static_cast<uint64_t>(width_);
  const uint64_t index_offset = round_up_8(tokens_end);
  static constexpr unsigned char kZeros[8] = {};
  file_.write(kZeros, index_offset - tokens_end);
  file_.write(offsets_.data(), offsets_.size() * sizeof(uint64_t));

  ShardHeader header{};
  std::memcpy(header.magic, kShardMagic, sizeof(header.magic));
  header.version = kShardVersion;
  header.token_bytes = static_cast<uint32_t>(width_);
  header.token_count = token_count_;
  header.doc_count = doc_count();
  header.tokens_offset = kShardHeaderBytes;
  header.index_offset = index_offset;
  file_.write_at(0, &header, sizeof(header));
  file_.commit();
}

// ---------------------------------------------------------------------------------------------
// Reader

TokenShard::TokenShard(const std::filesystem::path& path) : path_(path) {
  const std::string where = path.string();
  FdGuard fd{::open(path.c_str(), O_RDONLY | O_CLOEXEC)};
  LT_CHECK(fd.fd >= 0, "token shard {}: cannot open: {}", where, errno_text());
  struct stat st {};
  LT_CHECK(::fstat(fd.fd, &st) == 0, "token shard {}: fstat failed: {}", where, errno_text());
  LT_CHECK(S_ISREG(st.st_mode), "token shard {}: not a regular file", where);
  const auto file_size = static_cast<uint64_t>(st.st_size);
  LT_CHECK(file_size >= kShardHeaderBytes,
           "token shard {}: file is {} bytes, shorter than the {}-byte header", where, file_size,
           kShardHeaderBytes);
  void* addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  LT_CHECK(addr != MAP_FAILED, "token shard {}: mmap of {} bytes failed: {}", where, file_size,
           errno_text());
  base_ = static_cast<const unsigned char*>(addr);
  mapped_bytes_ = file_size;

  // The destructor does not run for a constructor that throws: unmap by hand.
  try {
    ShardHeader h;
    std::memcpy(&h, base_, sizeof(h));
    LT_CHECK(std::memcmp(h.magic, kShardMagic, sizeof(h.magic)) == 0,
             "token shard {}: bad magic (not a longtune token shard)", where);
    LT_CHECK(h.version == kShardVersion, "token shard {}: unsupported version {} (expected {})",
             where, h.version, kShardVersion);
    LT_CHECK(h.token_bytes == 2 || h.token_bytes == 4,
             "token shard {}: token_bytes is {}, expected 2 or 4", where, h.token_bytes);
    LT_CHECK(h.tokens_offset == kShardHeaderBytes,
             "token shard {}: tokens_offset is {}, expected {}", where, h.tokens_offset,
             kShardHeaderBytes);
    LT_CHECK(
        std::all_of(std::begin(h.reserved), std::end(h.reserved), [](auto b) { return b == 0; }),
        "token shard {}: reserved header bytes are not zero", where);

    // Bound the counts by the file size before multiplying, so nothing below can overflow.
    LT_CHECK(h.token_count <= file_size / h.token_bytes,
             "token shard {}: token_count {} does not fit in a {}-byte file", where, h.token_count,
             file_size);
    LT_CHECK(h.doc_count < file_size / 8,
             "token shard {}: doc_count {} does not fit in a {}-byte file", where, h.doc_count,
             file_size);
    const uint64_t expected_index_offset =
        round_up_8(kShardHeaderBytes + h.token_count * h.token_bytes);
    LT_CHECK(h.index_offset == expected_index_offset,
             "token shard {}: index_offset is {}, but {} tokens of {} bytes put the index at {}",
             where, h.index_offset, h.token_count, h.token_bytes, expected_index_offset);
    const uint64_t expected_size = h.index_offset + 8 * (h.doc_count + 1);
    LT_CHECK(
        file_size == expected_size,
        "token shard {}: file is {} bytes, but the header ({} tokens, {} documents) implies {} "
        "(truncated or trailing data)",
        where, file_size, h.token_count, h.doc_count, expected_size);

    const auto* index = reinterpret_cast<const uint64_t*>(base_ + h.index_offset);
    LT_CHECK(index[0] == 0, "token shard {}: index[0] is {}, expected 0", where, index[0]);
    for (uint64_t d = 0; d < h.doc_count; ++d) {
      LT_CHECK(index[d + 1] >= index[d],
               "token shard {}: index decreases at document {} ({} after {})", where, d,
               index[d + 1], index[d]);
    }
    LT_CHECK(index[h.doc_count] == h.token_count,
             "token shard {}: last index entry is {}, expected token_count {}", where,
             index[h.doc_count], h.token_count);

    width_ = static_cast<TokenWidth>(h.token_bytes);
    token_count_ = h.token_count;
    doc_count_ = h.doc_count;
    tokens_ = base_ + h.tokens_offset;
    offsets_ = index;
  } catch (...) {
    ::munmap(const_cast<unsigned char*>(base_), mapped_bytes_);
    throw;
  }
}

TokenShard::~TokenShard() {
  if (base_ != nullptr) ::munmap(const_cast<unsigned char*>(base_), mapped_bytes_);
}

uint64_t TokenShard::document_length(uint64_t doc) const {
  LT_CHECK(doc < doc_count_, "token shard {}: document {} out of range ({} documents)",
           path_.string(), doc, doc_count_);
  return offsets_[doc + 1] - offsets_[doc];
}

void TokenShard::copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const {
  const uint64_t length = document_length(doc);
  LT_CHECK(begin <= length && count <= length - begin,
           "token shard {}: tokens [{}, {}+{}) out of range of document {} ({} tokens)",
           path_.string(), begin, begin, count, doc, length);
  const uint64_t first = offsets_[doc] + begin;
  // Plain widening loops; the compiler vectorizes them (this is the training reader's hot path).
  if (width_ == TokenWidth::kUInt16) {
    const auto* src = reinterpret_cast<const uint16_t*>(tokens_) + first;
    for (uint64_t i = 0; i < count; ++i) out[i] = src[i];
  } else {
    const auto* src = reinterpret_cast<const uint32_t*>(tokens_) + first;
    for (uint64_t i = 0; i < count; ++i) out[i] = src[i];
  }
}

std::vector<int32_t> TokenShard::document(uint64_t doc) const {
  const uint64_t length = document_length(doc);
  std::vector<int64_t> wide(length);
  copy_tokens(doc, 0, length, wide.data());
  return {wide.begin(), wide.end()};
}

}  // namespace longtune::data
