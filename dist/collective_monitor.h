// A host-side watchdog over the collectives a rank has in flight. Waits that do not block the host
// (NCCL's, ordered on the CUDA stream) can no longer notice a stalled or dead peer themselves: the
// host runs ahead and only finds out much later, blocked in some unrelated synchronisation. The
// monitor's thread polls every watched c10d work and, when one has not completed within the
// deadline, reports it (by default: a named error on stderr and in the log, then the process exits
// with status 1, so the launcher sees a failed worker and restarts the group). It does not retry,
// abort communicators or decide what a deadline is (dist/process_group does).
#pragma once

#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace longtune::dist {

class CollectiveMonitor {
 public:
  struct Expired {
    int rank = 0;
    std::string what;        // e.g. "reduce_scatter of 12.5 MB"
    int64_t sequence = 0;    // the rank's n-th watched collective, from 1
    double seconds = 0;      // since it was issued
    std::chrono::milliseconds deadline{0};
  };
  using OnExpired = std::function<void(const Expired&)>;

  // `on_expired` runs on the monitor's thread, once per expired collective; the default reports it
  // and ends the process (a collective that never completes cannot be cancelled from the host).
  CollectiveMonitor(int rank, std::chrono::milliseconds deadline, OnExpired on_expired = exit_process);
  ~CollectiveMonitor();
  CollectiveMonitor(const CollectiveMonitor&) = delete;
  CollectiveMonitor& operator=(const CollectiveMonitor&) = delete;

  // Starts watching `work`; returns its ticket for finished().
  int64_t watch(std::string what, c10::intrusive_ptr<c10d::Work> work);
  // The host has seen the work complete (or fail): stop watching it now, so its tensors are not
  // kept alive until the next poll.
  void finished(int64_t ticket);
  size_t in_flight() const;

  // The message an expired collective is reported with.
  static std::string describe(const Expired& expired);
  // The default report: describe() to stderr and the log, then std::_Exit(1).
  [[noreturn]] static void exit_process(const Expired& expired);

 private:
  struct Watched {
    int64_t ticket;
    std::string what;
    c10::intrusive_ptr<c10d::Work> work;
    std::chrono::steady_clock::time_point issued;
  };
  void poll_loop();

  int rank_;
  std::chrono::milliseconds deadline_;
  std::chrono::milliseconds poll_interval_;
  OnExpired on_expired_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Watched> watched_;  // in issue order
  int64_t next_ticket_ = 1;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace longtune::dist
