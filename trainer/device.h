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
// Peak memory so far: CUDA allocator peak for a GPU; the process's peak resident set on the CPU.
int64_t peak_memory_bytes(const c10::Device& device);
// "NVIDIA H100 80GB HBM3", or "cpu".
std::string device_name(const c10::Device& device);
void synchronize(const c10::Device& device);
// The device generator's state (the CPU generator for the CPU) as a uint8 tensor, and back.
at::Tensor generator_state(const c10::Device& device);
void set_generator_state(const c10::Device& device, const at::Tensor& state);

}  // namespace longtune::trainer
