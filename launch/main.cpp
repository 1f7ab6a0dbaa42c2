// longtune-run: starts PROGRAM on this node as torchrun --no-python would (see options.h for the
// flags, worker_group.h for the behaviour). The only place that turns outcomes into exit codes:
// 0 all workers succeeded, 1 a worker failed after all restarts (torchrun's ChildFailedError), on a
// forwarded signal the workers' common exit code or else 128+signal, 2 a bad command line.
#include "launch/options.h"
#include "launch/worker_group.h"

#include <sys/wait.h>

#include <cstdio>
#include <exception>

namespace {

// After a forwarded signal: the code every worker exited with (e.g. a trainer's "preempted" code),
// else 128+signal as a shell would report.
int interrupted_exit_code(const longtune::launch::GroupResult& result) {
  int common = -1;
  for (int status : result.wait_statuses) {
    if (!WIFEXITED(status)) return 128 + result.launcher_signal;
    const int code = WEXITSTATUS(status);
    if (common != -1 && code != common) return 128 + result.launcher_signal;
    common = code;
  }
  return common > 0 ? common : 128 + result.launcher_signal;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace longtune::launch;
  LaunchOptions options;
  try {
    options = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "longtune-run: %s\n(run longtune-run --help for usage)\n", e.what());
    return 2;
  }
  if (options.help) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  try {
    const GroupResult result = run_worker_group(options);
    switch (result.outcome) {
      case GroupResult::Outcome::kSucceeded:
        return 0;
      case GroupResult::Outcome::kFailed:
        std::fputs(failure_summary(options, result).c_str(), stderr);
        return 1;
      case GroupResult::Outcome::kInterrupted:
        return interrupted_exit_code(result);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longtune-run: error: %s\n", e.what());
  }
  return 1;
}
