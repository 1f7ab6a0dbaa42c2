#include "dist/collective_monitor.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/log.h"

namespace longtune::dist {

CollectiveMonitor::CollectiveMonitor(int rank, std::chrono::milliseconds deadline, OnExpired on_expired)
    : rank_(rank),
      deadline_(deadline),
      // Fine enough that a report comes within 5% of the deadline, coarse enough to cost nothing.
      poll_interval_(std::clamp<std::chrono::milliseconds>(deadline / 20, std::chrono::milliseconds(10),
                                                           std::chrono::milliseconds(1000))),
      on_expired_(std::move(on_expired)),
      thread_([this] { poll_loop(); }) {}

CollectiveMonitor::~CollectiveMonitor() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

int64_t CollectiveMonitor::watch(std::string what, c10::intrusive_ptr<c10d::Work> work) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t ticket = next_ticket_++;
  watched_.push_back({ticket, std::move(what), std::move(work), std::chrono::steady_clock::now()});
  return ticket;
}

void CollectiveMonitor::finished(int64_t ticket) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Works finish roughly in issue order, so the ticket is almost always at the front.
  const auto it = std::find_if(watched_.begin(), watched_.end(),
                               [ticket](const Watched& w) { return w.ticket == ticket; });
  if (it != watched_.end()) watched_.erase(it);
}

size_t CollectiveMonitor::in_flight() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return watched_.size();
}

void CollectiveMonitor::poll_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, poll_interval_, [this] { return stopping_; });
    if (stopping_) break;
    const auto now = std::chrono::steady_clock::now();
    std::vector<Expired> expired;
    for (auto it = watched_.begin(); it != watched_.end();) {
      if (it->work->isCompleted()) {
        it = watched_.erase(it);
      } else if (now - it->issued >= deadline_) {
        expired.push_back({rank_, it->what, it->ticket,
                           std::chrono::duration<double>(now - it->issued).count(), deadline_});
        it = watched_.erase(it);
      } else {
        ++it;
      }
    }
    if (expired.empty()) continue;
    lock.unlock();
    for (const Expired& e : expired) on_expired_(e);
    lock.lock();
  }
}

std::string CollectiveMonitor::describe(const Expired& e) {
  return fmt::format("rank {}: collective #{} ({}) has not completed {:.1f} s after it was issued (the collective "
                     "timeout is {} s): another rank stalled or died. Exiting so that the launcher restarts the "
                     "group", e.rank, e.sequence, e.what, e.seconds, e.deadline.count() / 1000.0);
}

void CollectiveMonitor::exit_process(const Expired& expired) {
  const std::string message = describe(expired);
  // Straight to stderr as well: the console log may be rank 0's only, and this rank must be heard.
  std::fprintf(stderr, "longtune: error: %s\n", message.c_str());
  std::fflush(stderr);
  LT_ERROR("{}", message);
  // Not exit(): other threads are blocked inside the communicator, and static destructors would
  // wait on them.
  std::_Exit(1);
}

}  // namespace longtune::dist
