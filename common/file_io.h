// Crash-safe file output and content hashing, shared by data preparation and checkpoints.
// AtomicFile writes to "<path>.tmp-<pid>", and commit() fsyncs it, renames it over <path> and fsyncs
// the directory, so a reader sees either the old file or the whole new one, never a torn write
// (kill -9 included). A hashing file (`sha256`, what checkpoints write) is a two-stage pipeline over
// two page-aligned blocks of kWriteBlockBytes: the caller's thread copies bytes into one block and
// hashes it while it is still in cache, a helper thread writes the other to the file at a
// block-aligned offset, with O_DIRECT where the file system takes it (the disk then DMAs from our
// block: no page-cache copy, no CPU, and commit's fsync has little left) and with early writeback
// otherwise. So the digest comes out of the single pass that writes the bytes (no re-read), and
// hashing overlaps the disk. Not a general file API: reads go through mmap or iostreams where they
// are used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace longtune {

class Sha256;

// What commit() wrote: the size, and the SHA-256 of every byte (lowercase hex; empty when the
// file was opened without hashing).
struct FileDigest {
  uint64_t bytes = 0;
  std::string sha256;
};

class AtomicFile {
 public:
  // Bytes per write(2) of a hashing file (8 MiB): few system calls, offsets aligned for O_DIRECT,
  // a block small enough to stay in cache between its copy and its hash.
  static constexpr size_t kWriteBlockBytes = size_t{8} << 20;

  // Opens a fresh temporary file next to `path` (its directory must exist); throws longtune::Error
  // naming the path on failure. With `sha256`, commit() returns the digest of what was written.
  // Without `sync_directory`, commit() leaves the directory's fsync to the caller (one for many
  // files, as a checkpoint's writer does).
  // `direct_io` false keeps a hashing file's blocks in the page cache too (buffered writes with early
  // writeback: the path taken where the file system refuses O_DIRECT).
  explicit AtomicFile(std::filesystem::path path, bool sha256 = false, bool sync_directory = true,
                      bool direct_io = true);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Waits for a block still being written, then removes the temporary file unless commit() succeeded.
  ~AtomicFile();

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Overwrites bytes already written at `offset` (for headers filled in at the end). Not allowed on
  // a hashing file: the digest is of the bytes as they were streamed.
  void write_at(uint64_t offset, const void* data, size_t bytes);
  uint64_t bytes_written() const { return size_; }
  // fsync, rename onto the final path, fsync the directory (unless told not to). Throws on any
  // failure.
  FileDigest commit();

  const std::filesystem::path& path() const { return path_; }
  // After commit(): whether the whole blocks went to the disk with O_DIRECT (a hashing file on a
  // file system that takes it; the tail never does).
  bool direct_io() const { return direct_; }

 private:
  using Block = std::unique_ptr<char, void (*)(void*)>;
  // Hashes the full current block and hands it to the writer thread; the other block becomes current.
  void submit_block();
  // Waits for the block in flight; rethrows its write error.
  void wait_for_writer();
  // Writes the current block's first `staged_` bytes (the tail) on this thread, after the block in
  // flight, hashing them first.
  void write_tail();
  // The writer thread's job: `bytes` of `data` at the end of the file, which is at `offset`.
  void write_block(const char* data, size_t bytes, uint64_t offset);

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;  // bytes accepted by write(), staged ones included
  bool committed_ = false;
  bool sync_directory_ = true;
  std::unique_ptr<Sha256> hash_;  // null without sha256
  bool direct_ = false;           // blocks are written with O_DIRECT
  Block blocks_[2];               // page-aligned, kWriteBlockBytes each, made on first use
  int current_ = 0;               // the block being filled
  size_t staged_ = 0;             // bytes in it
  uint64_t submitted_ = 0;        // bytes handed to the writer so far (its next offset)
  std::thread writer_;            // the block in flight, if joinable
  std::exception_ptr write_error_;
};

// Writes `content` to `path` atomically (AtomicFile + commit); returns its size and SHA-256.
FileDigest write_file_atomic(const std::filesystem::path& path, std::string_view content, bool sync_directory = true);
// Whole file into a string; throws longtune::Error naming the path.
std::string read_file(const std::filesystem::path& path);
// fsync a directory so renames inside it are durable.
void fsync_directory(const std::filesystem::path& dir);
// Deletes `root` and everything below it (nothing if it does not exist), best effort: returns
// whether `root` is gone. Use this, not std::filesystem::remove_all, which resolves to a broken copy
// exported by LibTorch's wheel and has crashed in processes that link it. Symlinks are removed, not
// followed.
bool remove_tree(const std::filesystem::path& root);

// Incremental SHA-256 (OpenSSL); hex digests are lowercase, as sha256sum prints them.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t bytes);
  void update(std::string_view text) { update(text.data(), text.size()); }
  std::string hex_digest();  // finalizes; call once

 private:
  void* context_;  // EVP_MD_CTX*
};

std::string sha256_hex(std::string_view bytes);
// Streams the file; throws longtune::Error naming the path.
std::string sha256_file(const std::filesystem::path& path);

}  // namespace longtune
