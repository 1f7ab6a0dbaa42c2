// The planner's arithmetic: the state it counts per rank, what sharding and checkpointing change,
// sizes as users spell them, the verdict and the JSON scripts read. Its agreement with measured
// peaks is tests/integration/test_plan.py.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/check.h"
#include "plan/memory_plan.h"

namespace longtune::plan {
namespace {

PlanInputs llama7b(int world, config::Sharding sharding = config::Sharding::kFullShard) {
  PlanInputs in;
  in.model = model::model_preset("llama-7b");
  in.precision = config::Precision::kBf16Mixed;
  in.sharding = sharding;
  in.activation_checkpointing = true;
  in.seq_len = 32768;
  in.world_size = world;
  in.local_world_size = std::min(world, 8);
  in.distributed = true;
  in.device = DeviceKind::kCuda;
  in.prefetch_depth = 1;  // the trainer's default on a GPU
  return in;
}

int64_t item_bytes(const MemoryPlan& plan, const std::string& name) {
  for (const PlanItem& item : plan.items)
    if (item.name == name) return item.host_bytes + item.device_bytes;
  return -1;
}

TEST(MemoryPlan, PrefetchDepthAndReduceDtypeSizeTheCollectiveBuffers) {
  const PlanInputs base = llama7b(8);
  const MemoryPlan plan = plan_memory(base);
  const model::ModelConfig m = model::model_preset("llama-7b");
  const int64_t layer = 4 * m.hidden_size * m.hidden_size + 3 * m.hidden_size * m.intermediate_size + 2 * m.hidden_size;
  PlanInputs deeper = base;
  deeper.prefetch_depth = 2;
  EXPECT_EQ(item_bytes(plan_memory(deeper), "gathered units") - item_bytes(plan, "gathered units"), 2 * layer);
  PlanInputs bf16 = base;
  bf16.reduce_bytes = 2;
  bf16.reductions_in_flight = 4;
  // Two more layer buffers in flight, each and all the others at half the bytes.
  const int64_t head = m.vocab_size * m.hidden_size + m.hidden_size;
  EXPECT_EQ(item_bytes(plan, "gradient reductions") - item_bytes(plan_memory(bf16), "gradient reductions"),
            2 * head + layer * (4 * 2 - 2 * 4));
}

TEST(MemoryPlan, CountsSixteenBytesOfStatePerParameterOverTheRanks) {
  const MemoryPlan one = plan_memory(llama7b(1));
  EXPECT_EQ(one.parameters, model::model_preset("llama-7b").num_parameters());
  EXPECT_EQ(one.state_bytes_per_rank, 16 * one.parameters);
  const MemoryPlan eight = plan_memory(llama7b(8));
  // Each unit is padded to a multiple of the world size, so at most 7 elements per unit more.
  EXPECT_GE(eight.state_bytes_per_rank * 8, 16 * eight.parameters);
  EXPECT_LE(eight.state_bytes_per_rank * 8, 16 * (eight.parameters + 7 * 34));
  EXPECT_LT(eight.device_peak_bytes_per_rank, one.device_peak_bytes_per_rank);
  // On CUDA the state is on the device and the host holds the runtime only.
  EXPECT_EQ(item_bytes(eight, "master weights"), 4 * (eight.state_bytes_per_rank / 16));
  EXPECT_LT(eight.host_peak_bytes_per_rank, eight.device_peak_bytes_per_rank);
}

TEST(MemoryPlan, ShardGradOpHoldsEveryUnitAndCheckpointingSavesActivations) {
  const MemoryPlan full = plan_memory(llama7b(8));
  const MemoryPlan grad_op = plan_memory(llama7b(8, config::Sharding::kShardGradOp));
  EXPECT_EQ(item_bytes(grad_op, "gathered units"), 2 * full.parameters);
  EXPECT_GT(grad_op.device_peak_bytes_per_rank, full.device_peak_bytes_per_rank);
  PlanInputs no_checkpointing = llama7b(8);
  no_checkpointing.activation_checkpointing = false;
  const MemoryPlan all = plan_memory(no_checkpointing);
  EXPECT_GT(all.device_peak_bytes_per_rank, full.device_peak_bytes_per_rank + (int64_t{100} << 30));
  // The paper's 7B at 32k: fits 8 x 80 GB with checkpointing, not without.
  EXPECT_TRUE(check_fit(full, DeviceKind::kCuda, parse_bytes("80GiB", "x"), 0).fits);
  EXPECT_FALSE(check_fit(all, DeviceKind::kCuda, parse_bytes("80GiB", "x"), 0).fits);
}

TEST(MemoryPlan, SingleProcessMixedPrecisionKeepsBf16CopiesBesideTheMasters) {
  PlanInputs in = llama7b(1);
  in.distributed = false;
  in.device = DeviceKind::kCpu;
  const MemoryPlan plan = plan_memory(in);
  EXPECT_EQ(item_bytes(plan, "bf16 model parameters"), 2 * plan.parameters);
  EXPECT_EQ(plan.device_peak_bytes_per_rank, 0);
  EXPECT_EQ(item_bytes(plan, "gathered units"), -1);
}

TEST(MemoryPlan, ParsesSizesAsUsersWriteThem) {
  EXPECT_EQ(parse_bytes("80GiB", "--device-memory"), int64_t{80} << 30);
  EXPECT_EQ(parse_bytes("80 GB", "--device-memory"), int64_t{80'000'000'000});
  EXPECT_EQ(parse_bytes("512mib", "--device-memory"), int64_t{512} << 20);
  EXPECT_EQ(parse_bytes("1e9", "--device-memory"), int64_t{1'000'000'000});
  EXPECT_THROW(parse_bytes("eighty", "--device-memory"), Error);
  EXPECT_THROW(parse_bytes("80 parsecs", "--device-memory"), Error);
  EXPECT_THROW(parse_bytes("-1GB", "--device-memory"), Error);
}

TEST(MemoryPlan, JsonCarriesThePeaksAndTheVerdict) {
  const PlanInputs in = llama7b(8);
  const MemoryPlan plan = plan_memory(in);
  const PlanVerdict verdict = check_fit(plan, in.device, int64_t{1} << 30, 0);
  EXPECT_FALSE(verdict.fits);
  EXPECT_NE(verdict.reason.find("exceeds"), std::string::npos);
  const auto j = nlohmann::json::parse(plan_json(plan, in, verdict, int64_t{1} << 30));
  EXPECT_EQ(j["host_peak_bytes_per_rank"].get<int64_t>(), plan.host_peak_bytes_per_rank);
  EXPECT_EQ(j["device_peak_bytes_per_rank"].get<int64_t>(), plan.device_peak_bytes_per_rank);
  EXPECT_FALSE(j["fits"].get<bool>());
  EXPECT_EQ(j["items"].size(), plan.items.size());
  EXPECT_NE(plan_table(plan, in, verdict, int64_t{1} << 30).find("does not fit"), std::string::npos);
}

}  // namespace
}  // namespace longtune::plan
