// Line prefixing for teed worker output (see output_stream.h).
#include "launch/output_stream.h"

#include <unistd.h>

#include <cerrno>
#include <utility>

namespace longtune::launch {

void write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

OutputStream::OutputStream(OutputStream&& other) noexcept { *this = std::move(other); }

OutputStream& OutputStream::operator=(OutputStream&& other) noexcept {
  if (this != &other) {
    close_all();
    log_path = std::move(other.log_path);
    pipe_fd_ = std::exchange(other.pipe_fd_, -1);
    file_fd_ = std::exchange(other.file_fd_, -1);
    console_fd_ = other.console_fd_;
    prefix_ = std::move(other.prefix_);
    partial_ = std::move(other.partial_);
  }
  return *this;
}

OutputStream::~OutputStream() { close_all(); }

void OutputStream::open(int pipe_fd, int file_fd, int console_fd, std::string prefix) {
  close_all();
  pipe_fd_ = pipe_fd;
  file_fd_ = file_fd;
  console_fd_ = console_fd;
  prefix_ = std::move(prefix);
}

void OutputStream::pump() {
  if (pipe_fd_ < 0) return;
  char buf[65536];
  while (true) {
    const ssize_t n = read(pipe_fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;  // EAGAIN: nothing more for now
    if (n == 0) {       // every writer closed it
      close(pipe_fd_);
      pipe_fd_ = -1;
      return;
    }
    if (file_fd_ >= 0) write_all(file_fd_, buf, static_cast<size_t>(n));
    // One write(2) per chunk of complete lines keeps lines of different ranks from interleaving.
    std::string console;
    size_t start = 0;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') continue;
      console += prefix_;
      console += partial_;
      partial_.clear();
      console.append(buf + start, static_cast<size_t>(i) + 1 - start);
      start = static_cast<size_t>(i) + 1;
    }
    partial_.append(buf + start, static_cast<size_t>(n) - start);
    if (!console.empty()) write_all(console_fd_, console.data(), console.size());
  }
}

void OutputStream::finish() {
  pump();
  if (!partial_.empty() && console_fd_ >= 0) {
    const std::string line = prefix_ + partial_ + "\n";
    write_all(console_fd_, line.data(), line.size());
    partial_.clear();
  }
  close_all();
}

void OutputStream::close_all() {
  if (pipe_fd_ >= 0) close(pipe_fd_);
  if (file_fd_ >= 0) close(file_fd_);
  pipe_fd_ = file_fd_ = -1;
}

}  // namespace longtune::launch
