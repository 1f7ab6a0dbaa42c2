// `longtune plan JOB.yaml [--set k=v ...] --nproc-per-node N [--nnodes M] [--device-memory 80GiB]
// [--json]`: what one rank of the job will hold at its peak, itemised, and whether it fits. Reads
// the job and the model's config.json (or preset); no weights, no data, no device needed.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "common/check.h"
#include "config/job_config.h"
#include "plan/memory_plan.h"
#include "trainer/device.h"
#include "trainer/model_source.h"

namespace longtune::cli {

namespace {

struct PlanArgs {
  std::string job;
  std::vector<std::string> overrides;
  int nproc_per_node = 1;
  int nnodes = 1;
  bool single_process = false;
  std::string device = "auto";
  std::string device_memory;
  std::string host_memory;
  bool json = false;
};

void run_plan(const PlanArgs& args) {
  const config::JobConfig job = config::load_job_config(args.job, args.overrides);
  LT_CHECK(args.nproc_per_node >= 1 && args.nnodes >= 1, "--nproc-per-node and --nnodes must be >= 1");
  LT_CHECK(!args.single_process || args.nproc_per_node * args.nnodes == 1,
           "--single-process plans one plain process, not {} ranks", args.nproc_per_node * args.nnodes);
  plan::DeviceKind device = plan::DeviceKind::kCpu;
  if (args.device == "cuda") {
    device = plan::DeviceKind::kCuda;
  } else if (args.device == "auto") {
    // As the trainer picks: NCCL means GPUs; otherwise a GPU if one is asked about or present here.
    const bool gpu_here = trainer::device_total_memory(trainer::pick_device(0)) > 0;
    if (job.parallel.backend == config::Backend::kNccl || !args.device_memory.empty() ||
        (job.parallel.backend == config::Backend::kAuto && gpu_here))
      device = plan::DeviceKind::kCuda;
  } else {
    LT_CHECK(args.device == "cpu", "--device must be auto, cpu or cuda, got '{}'", args.device);
  }
  const trainer::ModelSource source = trainer::resolve_model_source(job.model.source);
  const model::ModelConfig model = trainer::job_model_config(job.model, source, job.data.seq_len, 0);
  const int world = args.nproc_per_node * args.nnodes;
  const plan::PlanInputs inputs = plan::plan_inputs(job, model, world, args.nproc_per_node, !args.single_process,
                                                    device, trainer::source_weight_file_bytes(source));
  const plan::MemoryPlan plan = plan::plan_memory(inputs);
  int64_t device_capacity = 0, host_capacity = 0;
  if (!args.device_memory.empty()) device_capacity = plan::parse_bytes(args.device_memory, "--device-memory");
  else if (device == plan::DeviceKind::kCuda) device_capacity = trainer::device_total_memory(trainer::pick_device(0));
  if (!args.host_memory.empty()) host_capacity = plan::parse_bytes(args.host_memory, "--host-memory") / args.nproc_per_node;
  else if (device == plan::DeviceKind::kCpu) host_capacity = trainer::host_available_memory() / args.nproc_per_node;
  const plan::PlanVerdict verdict = plan::check_fit(plan, device, device_capacity, host_capacity);
  const int64_t capacity = device == plan::DeviceKind::kCuda ? device_capacity : host_capacity;
  if (args.json)
    std::cout << plan::plan_json(plan, inputs, verdict, capacity) << "\n";
  else
    std::cout << plan::plan_table(plan, inputs, verdict, capacity);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand("plan", "Predict a training job's memory per rank, itemised, and whether it fits");
  cmd->add_option("job", args->job, "job file (see configs/)")->required();
  cmd->add_option("--set", args->overrides, "override a setting: section.key=value (repeatable)");
  cmd->add_option("--nproc-per-node", args->nproc_per_node, "ranks per node, as for longtune-run (default 1)");
  cmd->add_option("--nnodes", args->nnodes, "nodes (default 1)");
  cmd->add_flag("--single-process", args->single_process, "plan a plain `longtune train` (no launcher)");
  cmd->add_option("--device", args->device, "auto | cpu | cuda (auto: nccl or --device-memory means cuda)");
  cmd->add_option("--device-memory", args->device_memory, "memory of one GPU, e.g. 80GiB (default: this GPU's)");
  cmd->add_option("--host-memory", args->host_memory, "host memory of one node, e.g. 2TB (default on CPU: available)");
  cmd->add_flag("--json", args->json, "print one JSON object instead of the table");
  cmd->callback([args] { run_plan(*args); });
}

}  // namespace longtune::cli
