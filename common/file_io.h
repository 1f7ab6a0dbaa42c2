// Crash-safe file output and content hashing, shared by data preparation and checkpoints.
// AtomicFile writes to "<path>.tmp-<pid>", and commit() fsyncs it, renames it over <path> and fsyncs
// the directory, so a reader sees either the old file or the whole new one, never a torn write
// (kill -9 included). Not a general file API: reads go through mmap or iostreams where they are used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace longtune {

class AtomicFile {
 public:
  // Opens a fresh temporary file next to `path` (its directory must exist); throws longtune::Error
  // naming the path on failure.
  explicit AtomicFile(std::filesystem::path path);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  // Removes the temporary file unless commit() succeeded.
  ~AtomicFile();

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  // Overwrites bytes already written at `offset` (for headers filled in at the end).
  void write_at(uint64_t offset, const void* data, size_t bytes);
  uint64_t bytes_written() const { return size_; }
  // fsync, rename onto the final path, fsync the directory. Throws on any failure.
  void commit();

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  uint64_t size_ = 0;
  bool committed_ = false;
};

// Writes `content` to `path` atomically (AtomicFile + commit).
void write_file_atomic(const std::filesystem::path& path, std::string_view content);
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
