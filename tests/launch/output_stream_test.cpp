// launch/output_stream.cpp: teed bytes reach the log file unchanged and the console as prefixed
// whole lines, a partial last line included.
#include "launch/output_stream.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/test_support.h"

namespace longtune::launch {
namespace {

TEST(OutputStream, PrefixesLinesAndKeepsTheFileRaw) {
  testing::TempDir dir;
  const std::string log = (dir.path() / "stdout.log").string();
  const std::string console = (dir.path() / "console").string();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  const int console_fd = open(console.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  OutputStream stream;
  stream.open(fds[0], open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), console_fd, "[default1]:");
  write_all(fds[1], "a\nb", 3);
  stream.pump();
  write_all(fds[1], "c\n\nlast", 7);
  close(fds[1]);
  stream.finish();
  close(console_fd);
  EXPECT_FALSE(stream.is_open());
  EXPECT_EQ(testing::read_bytes(log), "a\nbc\n\nlast");
  EXPECT_EQ(testing::read_bytes(console), "[default1]:a\n[default1]:bc\n[default1]:\n[default1]:last\n");
}

}  // namespace
}  // namespace longtune::launch
