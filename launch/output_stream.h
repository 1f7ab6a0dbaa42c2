// One teed worker stream: the launcher reads the worker's pipe, writes the bytes unchanged to the
// rank's log file and each complete line, prefixed ("[default0]:"), to the console. Streams that are
// only redirected or inherited never pass through here (the worker writes the file or console itself).
#pragma once

#include <sys/types.h>

#include <string>

namespace longtune::launch {

// write(2) until everything is written or an error other than EINTR (errors are ignored: a closed
// console must not stop the launcher).
void write_all(int fd, const char* data, size_t size);

class OutputStream {
 public:
  OutputStream() = default;
  OutputStream(const OutputStream&) = delete;
  OutputStream& operator=(const OutputStream&) = delete;
  OutputStream(OutputStream&& other) noexcept;
  OutputStream& operator=(OutputStream&& other) noexcept;
  ~OutputStream();

  // Takes ownership of pipe_fd (non-blocking read end) and file_fd.
  void open(int pipe_fd, int file_fd, int console_fd, std::string prefix);
  bool is_open() const { return pipe_fd_ >= 0; }
  int fd() const { return pipe_fd_; }
  // Reads whatever is available now; closes the pipe at end of file.
  void pump();
  // Final pump, then writes a pending partial line (with a newline) and closes everything.
  void finish();

  std::string log_path;  // the rank's log file for this stream, if any (also when not teed)

 private:
  void close_all();
  int pipe_fd_ = -1;
  int file_fd_ = -1;
  int console_fd_ = -1;
  std::string prefix_;
  std::string partial_;  // console bytes after the last newline
};

}  // namespace longtune::launch
