// A memory planner: what one rank of a training job will hold at its peak, on the host and on the
// device, itemised, before anything is allocated. It knows the model only by its shapes
// (model::ModelConfig: config.json or a preset) and the job by the few settings that size memory,
// and it mirrors what the trainer allocates: masters, gradients and AdamW moments (whole, or one
// shard of each unit under FSDP), the compute-dtype copies (whole model, or the gathered units with
// prefetch), gradient reductions in flight, activations per layer (all of them, or with activation
// checkpointing one saved input per layer plus one recomputed layer), the chunked head + loss, and
// the runtime's own footprint. Not a profiler: `tests/plan/memory_plan_test` and the training
// metrics' host_peak_bytes / device_peak_bytes are what hold it to the truth.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/job_config.h"
#include "model/config.h"

namespace longtune::plan {

enum class DeviceKind { kCpu, kCuda };

// What sizes a rank's memory. Built from a job by plan_inputs(); tests build it directly.
struct PlanInputs {
  model::ModelConfig model;
  config::Precision precision = config::Precision::kFp32;
  config::Sharding sharding = config::Sharding::kFullShard;
  bool activation_checkpointing = false;
  int64_t micro_batch = 1;        // sequences per forward, per rank
  int64_t seq_len = 2048;         // tokens per sequence
  int64_t loss_chunk_tokens = 1024;
  int world_size = 1;             // ranks in all
  int local_world_size = 1;       // ranks per node (they share the node's host memory)
  bool distributed = false;       // launched with a process group (the sharded path, any world size)
  DeviceKind device = DeviceKind::kCpu;
  int64_t source_file_bytes = 0;  // bytes of the weight files the job loads from (0: a preset)
  int64_t prefetch_depth = 0;     // units gathered ahead of the computing one (sharded)
  int64_t reductions_in_flight = 2;  // gradient reduce buffers outstanding (sharded)
  int64_t reduce_bytes = 4;       // bytes per element of a gradient reduce buffer (fp32 or bf16)
};

// The inputs of `job` on world_size ranks (local_world_size per node) training on `device`,
// launched (a process group: the sharded path, at world size 1 too) or as one plain process.
// `model` must be the job's model config (trainer::job_model_config of its source).
PlanInputs plan_inputs(const config::JobConfig& job, const model::ModelConfig& model, int world_size,
                       int local_world_size, bool launched, DeviceKind device, int64_t source_file_bytes);

// When an item is held: for the whole step, with the activations (from the end of forward into
// backward), or only after backward has freed them (gradients that backward allocates).
enum class Phase { kThroughout, kWithActivations, kAfterBackward };
std::string to_string(Phase phase);

// One line of the plan: bytes one rank holds at its peak for one purpose.
struct PlanItem {
  std::string name;
  Phase phase = Phase::kThroughout;
  int64_t host_bytes = 0;
  int64_t device_bytes = 0;
  std::string note;  // how the figure is made
};

struct MemoryPlan {
  std::vector<PlanItem> items;             // in the table's order
  // Items held throughout plus the larger of the two other phases' sums.
  int64_t host_peak_bytes_per_rank = 0;
  int64_t device_peak_bytes_per_rank = 0;  // 0 on the CPU
  int64_t parameters = 0;                 // of the whole model
  int64_t state_bytes_per_rank = 0;       // masters + gradients + moments of this rank
};

MemoryPlan plan_memory(const PlanInputs& inputs);

// Whether a rank fits: the device's peak within device_capacity (CUDA), or the host's within
// host_capacity (CPU). A capacity <= 0 is unknown and fits.
struct PlanVerdict {
  bool fits = true;
  std::string reason;  // which peak exceeds which capacity, when it does not fit
};
PlanVerdict check_fit(const MemoryPlan& plan, DeviceKind device, int64_t device_capacity, int64_t host_capacity);

// "1.50 GiB", "812.3 MiB", "640 B".
std::string format_bytes(int64_t bytes);
// Parses "80GiB", "80 GB", "512MiB", "1e9" (bytes); throws longtune::Error naming `what` otherwise.
int64_t parse_bytes(const std::string& text, const std::string& what);

// The itemised table, with the verdict's line when a capacity is known.
std::string plan_table(const MemoryPlan& plan, const PlanInputs& inputs, const PlanVerdict& verdict,
                       int64_t capacity);
// One JSON object: the inputs, every item, the two peaks and the verdict.
std::string plan_json(const MemoryPlan& plan, const PlanInputs& inputs, const PlanVerdict& verdict,
                      int64_t capacity);

}  // namespace longtune::plan
