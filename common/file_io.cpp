#include "common/file_io.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <exception>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "common/check.h"

namespace longtune {
namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, const void* data, size_t bytes, const std::filesystem::path& path) {
  const char* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, cursor, bytes);
    if (n < 0 && errno == EINTR) continue;
    LT_CHECK(n > 0, "{}: write failed: {}", path.string(), errno_text());
    cursor += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path, bool sha256, bool sync_directory, bool direct_io)
    : path_(std::move(path)),
      sync_directory_(sync_directory),
      hash_(sha256 ? std::make_unique<Sha256>() : nullptr),
      blocks_{Block(nullptr, std::free), Block(nullptr, std::free)} {
  temp_path_ = path_;
  temp_path_ += ".tmp-" + std::to_string(::getpid());
  const int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  if (hash_ && direct_io) {
    // tmpfs and some others refuse O_DIRECT at open (EINVAL): they get buffered writes.
    fd_ = ::open(temp_path_.c_str(), flags | O_DIRECT, 0644);
    direct_ = fd_ >= 0;
  }
  if (fd_ < 0) fd_ = ::open(temp_path_.c_str(), flags, 0644);
  LT_CHECK(fd_ >= 0, "{}: cannot create: {}", temp_path_.string(), errno_text());
}

AtomicFile::~AtomicFile() {
  if (writer_.joinable()) writer_.join();
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::write_block(const char* data, size_t bytes, uint64_t offset) {
  const char* cursor = data;
  size_t left = bytes;
  while (left > 0) {
    const ssize_t n = ::write(fd_, cursor, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && direct_ && cursor == data) {
      // A file system that accepted O_DIRECT at open but not this write: buffered from here on.
      LT_CHECK(::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_DIRECT) == 0, "{}: fcntl failed: {}",
               temp_path_.string(), errno_text());
      direct_ = false;
      continue;
    }
    LT_CHECK(n > 0, "{}: write failed: {}", temp_path_.string(), errno_text());
    cursor += n;
    left -= static_cast<size_t>(n);
  }
  // Buffered: start the block's writeback now, without waiting for it, so the disk works while the
  // next block is hashed and commit()'s fsync finds little left. Advisory: failures surface there.
  if (!direct_)
    ::sync_file_range(fd_, static_cast<off_t>(offset), static_cast<off_t>(bytes), SYNC_FILE_RANGE_WRITE);
}

void AtomicFile::wait_for_writer() {
  if (writer_.joinable()) writer_.join();
  if (write_error_) std::rethrow_exception(std::exchange(write_error_, nullptr));
}

void AtomicFile::submit_block() {
  char* block = blocks_[current_].get();
  hash_->update(block, kWriteBlockBytes);  // still in cache from the copy into it
  wait_for_writer();                       // the other block is free again
  writer_ = std::thread([this, block, offset = submitted_] {
    try {
      write_block(block, kWriteBlockBytes, offset);
    } catch (...) {
      write_error_ = std::current_exception();
    }
  });
  submitted_ += kWriteBlockBytes;
  current_ ^= 1;
  staged_ = 0;
}

void AtomicFile::write_tail() {
  wait_for_writer();
  if (staged_ == 0) return;
  // O_DIRECT wants whole aligned blocks; the tail goes through the page cache (direct_ keeps
  // saying how the blocks went: nothing is written after the tail).
  if (direct_)
    LT_CHECK(::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_DIRECT) == 0, "{}: fcntl failed: {}",
             temp_path_.string(), errno_text());
  const char* tail = blocks_[current_].get();
  if (hash_) hash_->update(tail, staged_);
  write_all(fd_, tail, staged_, temp_path_);
  submitted_ += staged_;
  staged_ = 0;
}

void AtomicFile::write(const void* data, size_t bytes) {
  LT_CHECK(fd_ >= 0 && !committed_, "{}: write after commit", path_.string());
  size_ += bytes;
  if (!hash_) {
    write_all(fd_, data, bytes, temp_path_);
    submitted_ += bytes;
    return;
  }
  const char* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    Block& block = blocks_[current_];
    if (!block) {
      void* memory = nullptr;
      LT_CHECK(::posix_memalign(&memory, 4096, kWriteBlockBytes) == 0, "{}: out of memory for the write buffer",
               path_.string());
      block.reset(static_cast<char*>(memory));
    }
    const size_t take = std::min(bytes, kWriteBlockBytes - staged_);
    std::memcpy(block.get() + staged_, cursor, take);
    staged_ += take;
    cursor += take;
    bytes -= take;
    if (staged_ == kWriteBlockBytes) submit_block();
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t bytes) {
  LT_CHECK(offset + bytes <= size_, "{}: write_at past the end", path_.string());
  LT_CHECK(!hash_, "{}: write_at on a file hashed as it is streamed", path_.string());
  const char* cursor = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd_, cursor, bytes, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    LT_CHECK(n > 0, "{}: write failed: {}", temp_path_.string(), errno_text());
    cursor += n;
    offset += static_cast<uint64_t>(n);
    bytes -= static_cast<size_t>(n);
  }
}

FileDigest AtomicFile::commit() {
  LT_CHECK(fd_ >= 0 && !committed_, "{}: commit twice", path_.string());
  write_tail();
  LT_CHECK(::fsync(fd_) == 0, "{}: fsync failed: {}", temp_path_.string(), errno_text());
  LT_CHECK(::close(fd_) == 0, "{}: close failed: {}", temp_path_.string(), errno_text());
  fd_ = -1;
  LT_CHECK(::rename(temp_path_.c_str(), path_.c_str()) == 0, "{}: rename from {} failed: {}",
           path_.string(), temp_path_.string(), errno_text());
  committed_ = true;
  if (sync_directory_) fsync_directory(path_.has_parent_path() ? path_.parent_path() : std::filesystem::path("."));
  return FileDigest{size_, hash_ ? hash_->hex_digest() : std::string()};
}

FileDigest write_file_atomic(const std::filesystem::path& path, std::string_view content, bool sync_directory) {
  AtomicFile file(path, /*sha256=*/true, sync_directory);
  file.write(content);
  return file.commit();
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  LT_CHECK(in.good(), "{}: cannot open: {}", path.string(), errno_text());
  std::ostringstream buffer;
  buffer << in.rdbuf();
  LT_CHECK(!in.bad(), "{}: read failed", path.string());
  return std::move(buffer).str();
}

void fsync_directory(const std::filesystem::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  LT_CHECK(fd >= 0, "{}: cannot open directory: {}", dir.string(), errno_text());
  const int rc = ::fsync(fd);
  ::close(fd);
  LT_CHECK(rc == 0, "{}: fsync of directory failed: {}", dir.string(), errno_text());
}

bool remove_tree(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::is_directory(fs::symlink_status(root, error))) {
    // Collect first: removing entries while iterating is unspecified.
    std::vector<fs::path> entries;
    for (const auto& entry : fs::directory_iterator(root, error)) entries.push_back(entry.path());
    for (const fs::path& entry : entries) remove_tree(entry);
  }
  fs::remove(root, error);
  return !fs::exists(fs::symlink_status(root, error));
}

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  LT_CHECK(context_ != nullptr && EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(context_), EVP_sha256(),
                                                    nullptr) == 1,
           "sha256: OpenSSL init failed");
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(context_)); }

void Sha256::update(const void* data, size_t bytes) {
  LT_CHECK(EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(context_), data, bytes) == 1,
           "sha256: update failed");
}

std::string Sha256::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  LT_CHECK(EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(context_), digest, &length) == 1,
           "sha256: final failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

std::string sha256_hex(std::string_view bytes) {
  Sha256 hash;
  hash.update(bytes);
  return hash.hex_digest();
}

std::string sha256_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LT_CHECK(fd >= 0, "{}: cannot open: {}", path.string(), errno_text());
  Sha256 hash;
  std::vector<char> buffer(1 << 20);
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      LT_FAIL("{}: read failed: {}", path.string(), why);
    }
    if (n == 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return hash.hex_digest();
}

}  // namespace longtune
