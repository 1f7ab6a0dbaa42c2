#include "dist/process_group.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <torch/cuda.h>

#include "common/check.h"
#include "common/log.h"
#include "dist/collective_monitor.h"

namespace longtune::dist {

std::chrono::milliseconds timeout_grace(std::chrono::milliseconds timeout) {
  return std::max<std::chrono::milliseconds>(std::chrono::seconds(5), timeout / 10);
}

void PendingCollective::wait() {
  if (!wait_) return;
  std::function<void()> wait = std::move(wait_);
  wait_ = nullptr;
  wait();
}

namespace {

// One implementation over c10d::Backend; the backends differ only in how a few collectives are
// expressed (Gloo lacks 16-bit types and has a slow reduce-scatter).
class C10dProcessGroup final : public ProcessGroup {
 public:
  C10dProcessGroup(const DistEnv& env, const c10::Device& device, c10::intrusive_ptr<c10d::Store> store,
                   c10::intrusive_ptr<c10d::Backend> backend, bool nccl, std::chrono::milliseconds timeout,
                   WaitDiscipline wait)
      : env_(env), device_(device), store_(std::move(store)), backend_(std::move(backend)), nccl_(nccl),
        timeout_(timeout), bounded_(wait == WaitDiscipline::kBounded),
        monitor_(std::make_shared<CollectiveMonitor>(env.rank, bounded_ ? timeout + timeout_grace(timeout) : timeout)) {}

  ~C10dProcessGroup() override {
    try {
      backend_->shutdown();
    } catch (const std::exception& e) {
      LT_DEBUG("process group shutdown: {}", e.what());
    }
  }

  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string backend_name() const override { return nccl_ ? "nccl" : "gloo"; }

  PendingCollective all_gather(const at::Tensor& out, const at::Tensor& in) override {
    LT_CHECK(out.numel() == in.numel() * env_.world_size && out.scalar_type() == in.scalar_type(),
             "all_gather: output of {} elements for {} ranks x {}", out.numel(), env_.world_size, in.numel());
    at::Tensor source = in.contiguous(), target = out;
    // Gloo moves no 16-bit floats; an all-gather only moves bytes, so gather their bytes.
    if (!nccl_ && source.element_size() == 2) {
      source = source.view(at::kByte);
      target = out.view(at::kByte);
    }
    return track("all_gather", source, backend_->_allgather_base(target, source), [source] {});
  }

  PendingCollective reduce_scatter_sum(const at::Tensor& out, const at::Tensor& in) override {
    LT_CHECK(in.numel() == out.numel() * env_.world_size && out.scalar_type() == in.scalar_type(),
             "reduce_scatter: input of {} elements for {} ranks x {}", in.numel(), env_.world_size, out.numel());
    if (nccl_) {
      c10d::ReduceScatterOptions options;
      options.reduceOp = c10d::ReduceOp::SUM;
      return track("reduce_scatter", in, backend_->_reduce_scatter_base(const_cast<at::Tensor&>(out),
                                                                    const_cast<at::Tensor&>(in), options),
                   [] {});
    }
    // Gloo's reduce-scatter is one all-reduce per rank; one ring all-reduce of the whole buffer
    // moves less data. The slice is copied out when the caller waits.
    std::vector<at::Tensor> buffers{in};
    const int64_t n = out.numel();
    const int64_t offset = n * env_.rank;
    return track("reduce_scatter", in, backend_->allreduce(buffers, sum_options()),
                 [in, out, offset, n] { const_cast<at::Tensor&>(out).copy_(in.narrow(0, offset, n)); });
  }

  PendingCollective all_reduce_sum(const at::Tensor& tensor) override {
    std::vector<at::Tensor> buffers{tensor};
    return track("all_reduce", tensor, backend_->allreduce(buffers, sum_options()), [tensor] {});
  }

  void barrier() override {
    at::Tensor token = at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
    all_reduce_sum(token).wait();
    if (device_.is_cuda()) torch::cuda::synchronize(device_.index());
  }

  std::vector<std::string> all_gather_strings(const std::string& key, const std::string& value) override {
    const std::string prefix = "strings/" + key + "/";
    try {
      store_->set(prefix + std::to_string(env_.rank), std::vector<uint8_t>(value.begin(), value.end()));
      std::vector<std::string> values;
      for (int r = 0; r < env_.world_size; ++r) {
        const std::vector<uint8_t> bytes = store_->get(prefix + std::to_string(r));
        values.emplace_back(bytes.begin(), bytes.end());
      }
      return values;
    } catch (const std::exception& e) {
      LT_FAIL("rank {}: exchanging '{}' through the rendezvous store failed (another rank died, stalled past the "
              "collective timeout of {} s, or diverged): {}", env_.rank, key, timeout_.count() / 1000,
              first_line(e.what()));
    }
  }

 private:
  static c10d::AllreduceOptions sum_options() {
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    return options;
  }

  static std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

  // Wraps a c10d work so that its failure (a timeout, a dead peer) surfaces as a longtune::Error
  // naming the collective and this rank, and so that the monitor watches it until it completes;
  // `then` holds the tensors alive until completion.
  PendingCollective track(const char* what, const at::Tensor& payload, c10::intrusive_ptr<c10d::Work> work,
                          std::function<void()> then) {
    const int64_t ticket = monitor_->watch(
        fmt::format("{} of {:.1f} MB {}", what, static_cast<double>(payload.nbytes()) / 1e6,
                    c10::toString(payload.scalar_type())),
        work);
    return PendingCollective([work, then = std::move(then), what, ticket, monitor = monitor_, rank = env_.rank,
                              timeout = timeout_, bounded = bounded_] {
      try {
        // Without a host timeout, ProcessGroupNCCL only makes the current stream wait; with one it
        // would spin the CPU until the GPU is done.
        if (bounded) work->wait(timeout);
        else work->wait();
      } catch (const std::exception& e) {
        monitor->finished(ticket);
        LT_FAIL("rank {}: {} failed (another rank died, stalled past the collective timeout of {} s, or "
                "diverged): {}", rank, what, timeout.count() / 1000, first_line(e.what()));
      }
      if (work->isCompleted()) monitor->finished(ticket);
      then();
    });
  }

  DistEnv env_;
  c10::Device device_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
  bool nccl_;
  std::chrono::milliseconds timeout_;
  bool bounded_;
  std::shared_ptr<CollectiveMonitor> monitor_;  // shared with the waits, which may outlive a call
};

c10::intrusive_ptr<c10d::Store> rendezvous(const DistEnv& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env.master_port);
  options.isServer = env.rank == 0 && !env.agent_hosts_store;
  if (options.isServer) options.numWorkers = env.world_size;
  options.waitWorkers = false;
  options.timeout = timeout;
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    // Keys of an earlier attempt (torchrun's agent store outlives restarts) must not be seen again.
    return c10::make_intrusive<c10d::PrefixStore>(fmt::format("longtune/attempt_{}", env.restart_count), tcp);
  } catch (const std::exception& e) {
    LT_FAIL("rank {}: rendezvous at {}:{} (MASTER_ADDR:MASTER_PORT from {}) failed: {}", env.rank, env.master_addr,
            env.master_port, env.source, std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
}

}  // namespace

std::unique_ptr<ProcessGroup> ProcessGroup::create(const DistEnv& env, const c10::Device& device, Backend backend,
                                                   std::chrono::milliseconds timeout, WaitDiscipline wait) {
  const bool nccl = backend == Backend::kNccl || (backend == Backend::kAuto && device.is_cuda());
  if (wait == WaitDiscipline::kAuto) wait = nccl ? WaitDiscipline::kDeviceOrdered : WaitDiscipline::kBounded;
  // The monitor reports at the collective timeout when the host does not wait with a bound; the
  // backend's own timeout (NCCL's watchdog, Gloo's transport) then only backs it up.
  const std::chrono::milliseconds backend_timeout =
      wait == WaitDiscipline::kDeviceOrdered ? timeout + timeout_grace(timeout) : timeout;
  LT_CHECK(!nccl || device.is_cuda(), "process group: the NCCL backend needs a CUDA device, but this rank runs on {}",
           device.str());
  c10::intrusive_ptr<c10d::Store> store = rendezvous(env, timeout);
  c10::intrusive_ptr<c10d::Backend> group;
  if (nccl) {
#ifdef USE_C10D_NCCL
    c10::cuda::set_device(device.index());
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = backend_timeout;
    group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, env.rank, env.world_size, options);
#else
    LT_FAIL("process group: this build of longtune has no NCCL support");
#endif
  } else {
    auto options = c10d::ProcessGroupGloo::Options::create(backend_timeout);
    options->devices.push_back(env.gloo_interface.empty()
                                   ? c10d::ProcessGroupGloo::createDefaultDevice()
                                   : c10d::ProcessGroupGloo::createDeviceForInterface(env.gloo_interface));
    try {
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, env.rank, env.world_size, options);
    } catch (const std::exception& e) {
      LT_FAIL("rank {}: connecting the Gloo process group of {} ranks failed: {}", env.rank, env.world_size,
              std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
    }
  }
  LT_INFO("rank {}/{}: {} process group up (store {}:{}, timeout {} s, {} waits)", env.rank, env.world_size,
          nccl ? "nccl" : "gloo", env.master_addr, env.master_port, timeout.count() / 1000,
          wait == WaitDiscipline::kBounded ? "bounded host" : "device-ordered");
  return std::make_unique<C10dProcessGroup>(env, device, std::move(store), std::move(group), nccl, timeout, wait);
}

double all_reduce_sum(ProcessGroup& group, double value, const c10::Device& device) {
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble).device(device));
  group.all_reduce_sum(t).wait();
  return t.item<double>();
}

std::vector<double> all_reduce_sum(ProcessGroup& group, const std::vector<double>& values, const c10::Device& device) {
  if (values.empty()) return {};
  at::Tensor t = at::tensor(values, at::TensorOptions().dtype(at::kDouble)).to(device);
  group.all_reduce_sum(t).wait();
  t = t.cpu();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

int64_t all_reduce_max(ProcessGroup& group, int64_t value, const c10::Device& device) {
  const auto options = at::TensorOptions().dtype(at::kLong).device(device);
  at::Tensor mine = at::full({1}, value, options);
  at::Tensor all = at::empty({group.world_size()}, options);
  group.all_gather(all, mine).wait();
  return all.max().item<int64_t>();
}

}  // namespace longtune::dist
