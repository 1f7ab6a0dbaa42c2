// Token shard files: the on-disk unit of prepared data. One shard holds the token ids of a run of
// whole documents plus the index of where each document starts. Writing is crash-safe (AtomicFile:
// temp name, fsync, rename); reading is a read-only mmap validated against its header. Not the
// manifest (data/prepared_data.h says which shards make a split) and not the packing into sequences.
//
// Layout, little-endian, every section 8-byte aligned:
//   offset 0   header, 64 bytes:
//     char[8] magic       "LTTOKENS"
//     u32     version      1
//     u32     token_bytes  2 (uint16 ids) or 4 (uint32 ids)
//     u64     token_count  total tokens over all documents
//     u64     doc_count    documents
//     u64     tokens_offset  = 64
//     u64     index_offset   = tokens_offset + token_count*token_bytes rounded up to 8
//     u8[16]  reserved (zero)
//   tokens_offset: token ids, documents back to back, no separators
//   index_offset:  u64[doc_count + 1] document start offsets in tokens; [0] = 0, [doc_count] = token_count
//   file size = index_offset + 8 * (doc_count + 1)
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <vector>

#include "common/file_io.h"

namespace longtune::data {

enum class TokenWidth : uint32_t { kUInt16 = 2, kUInt32 = 4 };

// uint16 when every id of a vocabulary of `vocab_size` fits, else uint32.
TokenWidth token_width_for_vocab(int64_t vocab_size);
const char* to_string(TokenWidth width);  // "uint16" | "uint32"

inline constexpr char kShardMagic[8] = {'L', 'T', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint64_t kShardHeaderBytes = 64;

// Streams documents into a new shard at `path`. Nothing appears at `path` until finish().
// Destroying an unfinished writer leaves no file behind.
class TokenShardWriter {
 public:
  TokenShardWriter(const std::filesystem::path& path, TokenWidth width);
  // Appends one document; throws longtune::Error if an id does not fit the width.
  void add_document(std::span<const int32_t> tokens);
  // Writes the index and header, fsyncs and renames into place.
  void finish();

  uint64_t token_count() const { return token_count_; }
  uint64_t doc_count() const { return offsets_.size() - 1; }

 private:
  AtomicFile file_;
  TokenWidth width_;
  uint64_t token_count_ = 0;
  std::vector<uint64_t> offsets_{0};
  std::vector<unsigned char> buffer_;
  bool finished_ = false;
};

// A validated read-only view of one shard file (mmap). Throws longtune::Error naming the file for
// a wrong magic/version/width, a size that disagrees with the header, or a malformed index.
class TokenShard {
 public:
  explicit TokenShard(const std::filesystem::path& path);
  ~TokenShard();
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::filesystem::path& path() const { return path_; }
  TokenWidth width() const { return width_; }
  uint64_t token_count() const { return token_count_; }
  uint64_t doc_count() const { return doc_count_; }
  uint64_t document_length(uint64_t doc) const;
  // Copies tokens [begin, begin + count) of document `doc` into out (widened to int64).
  void copy_tokens(uint64_t doc, uint64_t begin, uint64_t count, int64_t* out) const;
  // Document `doc` as int32 ids (tests, tools).
  std::vector<int32_t> document(uint64_t doc) const;

 private:
  std::filesystem::path path_;
  const unsigned char* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  TokenWidth width_ = TokenWidth::kUInt16;
  uint64_t token_count_ = 0;
  uint64_t doc_count_ = 0;
  const unsigned char* tokens_ = nullptr;
  const uint64_t* offsets_ = nullptr;
};

}  // namespace longtune::data
