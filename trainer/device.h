// The accelerator-facing odds and ends the trainer needs, behind one small interface so the rest
// of trainer/ has no CUDA headers: which device to train on, peak memory, device name,
// synchronization, and the RNG state of the device's generator. Every function works on CPU too.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

namespace longtune::trainer {

// CUDA device `local_rank` when CUDA is available, else the CPU.
c10::Device pick_device(int local_rank = 0);
// This process's peaks so far: its resident set on the host (VmHWM, whatever the device), and the
// CUDA caching allocator's peak of allocated bytes on a GPU (0 on the CPU).
struct MemoryPeaks {
  int64_t host_bytes = 0;
  int64_t device_bytes = 0;
};
MemoryPeaks peak_memory(const c10::Device& device);
// The device's total memory (CUDA), or 0 for the CPU.
int64_t device_total_memory(const c10::Device& device);
// The host memory available now (/proc/meminfo MemAvailable), or 0 if unknown.
int64_t host_available_memory();
// "NVIDIA H100 80GB HBM3", or "cpu".
std::string device_name(const c10::Device& device);
void synchronize(const c10::Device& device);
// The device generator's state (the CPU generator for the CPU) as a uint8 tensor, and back.
at::Tensor generator_state(const c10::Device& device);
void set_generator_state(const c10::Device& device, const at::Tensor& state);

}  // namespace longtune::trainer
