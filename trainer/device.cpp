#include "trainer/device.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <sys/resource.h>
#include <torch/cuda.h>

#include <fstream>
#include <mutex>
#include <string>

#include "common/log.h"

namespace longtune::trainer {

c10::Device pick_device(int local_rank) {
  if (!torch::cuda::is_available()) return c10::Device(c10::kCPU);
  const int count = static_cast<int>(torch::cuda::device_count());
  // More ranks than GPUs share them round-robin: fine for Gloo (tests, comparisons); NCCL refuses
  // two ranks on one GPU with its own error.
  if (local_rank >= count)
    LT_WARN("LOCAL_RANK {} but {} CUDA device(s) visible: sharing cuda:{}", local_rank, count, local_rank % count);
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank % count));
}

MemoryPeaks peak_memory(const c10::Device& device) {
  MemoryPeaks peaks;
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  peaks.host_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    peaks.device_bytes = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
  return peaks;
}

int64_t device_total_memory(const c10::Device& device) {
  if (!device.is_cuda()) return 0;
  return static_cast<int64_t>(at::cuda::getDeviceProperties(device.index())->totalGlobalMem);
}

int64_t host_available_memory() {
  std::ifstream meminfo("/proc/meminfo");
  const std::string key = "MemAvailable:";
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;  // "... kB"
  return 0;
}

std::string device_name(const c10::Device& device) {
  if (device.is_cuda()) return at::cuda::getDeviceProperties(device.index())->name;
  return "cpu";
}

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

at::Tensor generator_state(const c10::Device& device) {
  at::Generator generator = device.is_cuda() ? at::cuda::detail::getDefaultCUDAGenerator(device.index())
                                             : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_generator_state(const c10::Device& device, const at::Tensor& state) {
  at::Generator generator = device.is_cuda() ? at::cuda::detail::getDefaultCUDAGenerator(device.index())
                                             : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

}  // namespace longtune::trainer
