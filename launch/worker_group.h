// The local worker group: starts nproc_per_node processes of PROGRAM with torchrun's environment,
// watches them, stops them all (SIGTERM, then SIGKILL after a grace period) as soon as one fails, the
// round fails on another node, or the launcher gets a handled signal, and restarts the group in the
// next round agreed with the other nodes' launchers (rendezvous.h), up to --max-restarts rounds.
// Output goes to the console, to per-rank log files, or both with a "[<role><local rank>]:" prefix.
// Not done here: the round protocol itself (rendezvous), and the workers' process group, which uses
// this launcher's store (TORCHELASTIC_USE_AGENT_STORE=True) under a per-round key prefix.
#pragma once

#include "launch/options.h"

#include <sys/types.h>

#include <string>
#include <vector>

namespace longtune::launch {

// One worker that failed: exited non-zero or died from a signal.
struct WorkerFailure {
  int rank = 0;
  int local_rank = 0;
  pid_t pid = 0;
  int exit_code = 0;       // if exited
  int signal = 0;          // if killed by a signal (then exit_code is unused)
  double time = 0;         // seconds since the epoch when the launcher saw it
  std::string stderr_log;  // the rank's stderr.log, if its stderr went to a file
  std::string error_file;  // TORCHELASTIC_ERROR_FILE, if the worker wrote it
};

// How the last attempt of the group ended.
struct GroupResult {
  enum class Outcome { kSucceeded, kFailed, kInterrupted } outcome = Outcome::kSucceeded;
  int restarts = 0;                     // restarts done (= TORCHELASTIC_RESTART_COUNT of the last attempt)
  std::vector<WorkerFailure> failures;  // kFailed: first observed failure first (on this node)
  std::string remote_failure;           // kFailed/kInterrupted on another node's account: its reason
  int launcher_signal = 0;              // kInterrupted: the signal the launcher received
  std::vector<int> wait_statuses;       // raw waitpid status of every local worker, last attempt
  std::string run_log_dir;              // <log_dir>/<run_id>_XXXXXX
};

// Runs the group to completion (including restarts). Throws longtune::Error for launcher-side
// failures (cannot create the log folder, cannot fork).
GroupResult run_worker_group(const LaunchOptions& options);

// torchrun-style failure report (root cause first) for stderr.
std::string failure_summary(const LaunchOptions& options, const GroupResult& result);

// The environment a worker gets (name=value strings): the launcher's own plus torchrun's variables.
std::vector<std::string> worker_environment(const LaunchOptions& options, int local_rank,
                                            int restart_count, const std::string& error_file);

}  // namespace longtune::launch
