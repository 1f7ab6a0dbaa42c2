#include "report/gnuplot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <sstream>

#include "common/check.h"
#include "common/file_io.h"

extern char** environ;

namespace longtune::report {

namespace fs = std::filesystem;

namespace {

std::optional<fs::path> find_on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const fs::path candidate = fs::path(dir) / program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

// Runs `argv` with stdout and stderr going to `log_path`; returns the exit status (-1 if it did not
// exit normally).
int run_program(const std::vector<std::string>& argv, const fs::path& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  LT_CHECK(spawn_error == 0, "cannot run {}: {}", argv[0], std::strerror(spawn_error));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    LT_CHECK(errno == EINTR, "waiting for {} failed: {}", argv[0], std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

Gnuplot find_gnuplot(const fs::path& scratch_log) {
  const std::optional<fs::path> program = find_on_path("gnuplot");
  LT_CHECK(program.has_value(), "gnuplot is not on PATH; install it (Debian/Ubuntu: apt-get install gnuplot-nox)");
  // pngcairo (antialiased) when this gnuplot has it, else the libgd png terminal.
  const bool cairo = run_program({program->string(), "-e", "set terminal pngcairo"}, scratch_log) == 0;
  return {*program, cairo ? "pngcairo size 1000,600 noenhanced font ',11'" : "png size 1000,600 noenhanced"};
}

std::string gnuplot_quoted(const fs::path& path) {
  std::string out = "'";
  for (char c : path.string()) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

void run_gnuplot(const Gnuplot& gnuplot, const fs::path& script_path, const std::string& script,
                 const std::vector<fs::path>& images, const fs::path& log_path) {
  write_file_atomic(script_path, script);
  for (const auto& image : images) ::unlink(image.c_str());  // a stale chart must not pass the check below
  const int status = run_program({gnuplot.program.string(), script_path.string()}, log_path);
  LT_CHECK(status == 0, "gnuplot failed (exit status {}) on {}:\n{}", status, script_path.string(),
           read_file(log_path));
  for (const auto& image : images) {
    std::error_code error;
    const auto size = fs::file_size(image, error);
    LT_CHECK(!error && size > 0, "gnuplot did not write {} (see {})", image.string(), log_path.string());
  }
}

}  // namespace longtune::report
