// The ranks of a distributed run as one communicator: TCPStore rendezvous at MASTER_ADDR:PORT
// (hosted by rank 0, or by torchrun's agent), then c10d's ProcessGroupNCCL on GPUs or
// ProcessGroupGloo on CPU behind one interface, so the sharding code has a single path for both.
// Every collective is asynchronous and returns a PendingCollective. NCCL's waits do not block the
// host (they order the CUDA stream), Gloo's do, with a bound; either way a collective that does not
// complete within the configured timeout becomes a named error, never a silent hang: Gloo's wait
// throws, and a CollectiveMonitor thread ends the process for one the host did not wait on (NCCL's
// own watchdog, a grace period later, is the backstop). Not the sharding policy (dist/fsdp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dist/dist_env.h"

namespace longtune::dist {

// A collective in flight. wait() blocks the CPU (WaitDiscipline::kBounded) or orders the current
// CUDA stream after it (kDeviceOrdered), then runs the collective's completion step (e.g. accumulate
// a reduced gradient), which is itself stream-ordered on a GPU.
class PendingCollective {
 public:
  PendingCollective() = default;
  explicit PendingCollective(std::function<void()> wait) : wait_(std::move(wait)) {}
  bool pending() const { return static_cast<bool>(wait_); }
  void wait();

 private:
  std::function<void()> wait_;
};

// Which c10d backend: auto picks NCCL for a CUDA device and Gloo for the CPU.
enum class Backend { kAuto, kNccl, kGloo };

// How the host waits for a collective.
//   kBounded: it blocks until the collective completes, or throws after the timeout. Gloo's default:
//     its collectives run on host threads, so there is nothing to run ahead of.
//   kDeviceOrdered: it waits without a host timeout (on NCCL: it only makes the current CUDA stream
//     wait, and runs on), and the CollectiveMonitor turns a collective still incomplete after the
//     timeout into a named error exit. NCCL's default. On Gloo it stands in for NCCL in tests.
enum class WaitDiscipline { kAuto, kBounded, kDeviceOrdered };

// The grace past the collective timeout given to the second line of defence: the monitor under
// kBounded waits, the backend's own timeout (NCCL's watchdog) under kDeviceOrdered.
std::chrono::milliseconds timeout_grace(std::chrono::milliseconds timeout);

class ProcessGroup {
 public:
  // Rendezvous of `env.world_size` ranks and the backend for `device` (auto: NCCL for CUDA, Gloo for
  // CPU). `timeout` bounds the rendezvous and every collective. Throws longtune::Error on failure.
  static std::unique_ptr<ProcessGroup> create(const DistEnv& env, const c10::Device& device, Backend backend,
                                              std::chrono::milliseconds timeout,
                                              WaitDiscipline wait = WaitDiscipline::kAuto);
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend_name() const = 0;

  // out (world * n) = every rank's `in` (n), in rank order. Any dtype on either backend.
  virtual PendingCollective all_gather(const at::Tensor& out, const at::Tensor& in) = 0;
  // out (n) = this rank's n-slice of the elementwise sum over ranks of `in` (world * n). `in` may be
  // overwritten. Floating dtypes.
  virtual PendingCollective reduce_scatter_sum(const at::Tensor& out, const at::Tensor& in) = 0;
  // tensor = elementwise sum over ranks, in place.
  virtual PendingCollective all_reduce_sum(const at::Tensor& tensor) = 0;
  // Returns when every rank has called it (within the timeout).
  virtual void barrier() = 0;
  // Every rank contributes `value`; returns all ranks' values in rank order (through the store;
  // for small metadata such as checkpoint file listings). `key` must be unique per call.
  virtual std::vector<std::string> all_gather_strings(const std::string& key, const std::string& value) = 0;
};

// Sums a double over every rank (a convenience over all_reduce_sum, waited on).
double all_reduce_sum(ProcessGroup& group, double value, const c10::Device& device);
// Sums several doubles over every rank in one collective.
std::vector<double> all_reduce_sum(ProcessGroup& group, const std::vector<double>& values, const c10::Device& device);
// The largest of one integer per rank (through an all-gather, which every backend has).
int64_t all_reduce_max(ProcessGroup& group, int64_t value, const c10::Device& device);

}  // namespace longtune::dist
