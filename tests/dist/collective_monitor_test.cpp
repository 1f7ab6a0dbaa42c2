// Tests for dist/collective_monitor and the device-ordered waits of dist/process_group: a
// collective that never completes is reported once, near its deadline, naming the rank and the
// collective; completed and finished ones never are; the default report ends the process with
// status 1. And the NCCL wait discipline's CPU twin: on Gloo with waits that set no host timeout,
// a rank whose peer stalls exits with the monitor's named error within the collective timeout.
#include "dist/collective_monitor.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/dist_support.h"

namespace longtune::dist {
namespace {

using namespace std::chrono_literals;

// A c10d work whose completion the test decides.
class ScriptedWork final : public c10d::Work {
 public:
  bool isCompleted() override { return done.load(); }
  std::atomic<bool> done{false};
};

struct Reports {
  std::mutex mutex;
  std::vector<CollectiveMonitor::Expired> expired;
  std::vector<double> at_seconds;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  CollectiveMonitor::OnExpired recorder() {
    return [this](const CollectiveMonitor::Expired& e) {
      std::lock_guard<std::mutex> lock(mutex);
      expired.push_back(e);
      at_seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    };
  }
};

TEST(CollectiveMonitor, ReportsOnlyTheCollectiveThatMissesItsDeadlineOnce) {
  Reports reports;
  {
    CollectiveMonitor monitor(3, 300ms, reports.recorder());
    auto stuck = c10::make_intrusive<ScriptedWork>();
    auto completes = c10::make_intrusive<ScriptedWork>();
    auto waited_on = c10::make_intrusive<ScriptedWork>();
    monitor.watch("all_gather of 1.0 MB Float", completes);
    monitor.watch("reduce_scatter of 2.0 MB BFloat16", stuck);
    const int64_t ticket = monitor.watch("all_reduce of 0.0 MB Double", waited_on);
    EXPECT_EQ(monitor.in_flight(), 3u);
    monitor.finished(ticket);  // the host saw it through
    completes->done = true;
    std::this_thread::sleep_for(900ms);
    EXPECT_EQ(monitor.in_flight(), 0u);
  }
  ASSERT_EQ(reports.expired.size(), 1u);
  const CollectiveMonitor::Expired& e = reports.expired[0];
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.sequence, 2);
  EXPECT_EQ(e.what, "reduce_scatter of 2.0 MB BFloat16");
  EXPECT_GE(e.seconds, 0.3);
  // Polled every deadline / 20 (at least 10 ms): reported within a few polls of the deadline.
  EXPECT_LT(reports.at_seconds[0], 0.3 + 0.2);
  const std::string message = CollectiveMonitor::describe(e);
  EXPECT_NE(message.find("rank 3: collective #2 (reduce_scatter of 2.0 MB BFloat16) has not completed"),
            std::string::npos) << message;
  EXPECT_NE(message.find("another rank stalled or died"), std::string::npos) << message;
}

TEST(CollectiveMonitorDeathTest, DefaultReportEndsTheProcessWithTheNamedError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        CollectiveMonitor monitor(1, 100ms);
        monitor.watch("all_gather of 4.0 MB BFloat16", c10::make_intrusive<ScriptedWork>());
        std::this_thread::sleep_for(5s);
      },
      ::testing::ExitedWithCode(1),
      "rank 1: collective #1 \\(all_gather of 4.0 MB BFloat16\\) has not completed .* another rank stalled or died");
}

// NCCL's discipline on Gloo: the waiting rank's host has no bound of its own (the backend's is the
// timeout plus a grace), so only the monitor can end the stall, and it must within the timeout.
TEST(CollectiveMonitorDeathTest, DeviceOrderedWaitOnAStalledPeerExitsWithinTheTimeout) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto start = std::chrono::steady_clock::now();
        run_ranks(
            2,
            [&](int rank, ProcessGroup& group) {
              if (rank == 1) {
                std::this_thread::sleep_for(20s);  // stalls: never joins the collective
                return;
              }
              at::Tensor t = at::ones({1024});
              group.all_reduce_sum(t).wait();
            },
            1500ms, c10::Device(c10::kCPU), Backend::kGloo, WaitDiscipline::kDeviceOrdered);
        // Not reached: the monitor must have ended the process; say how long it took if it did not.
        std::fprintf(stderr, "no exit after %.1f s\n",
                     std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        std::exit(0);
      },
      ::testing::ExitedWithCode(1), "rank 0: collective #1 \\(all_reduce of 0.0 MB Float\\) has not completed 1\\.[5-9]");
}

}  // namespace
}  // namespace longtune::dist
