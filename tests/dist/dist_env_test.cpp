// Reading the distributed environment: torchrun's variables, SLURM's, none, and every malformed or
// inconsistent case named in its error.
#include "dist/dist_env.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/test_support.h"

namespace longtune::dist {
namespace {

using longtune::testing::expect_error;

EnvLookup fake(std::map<std::string, std::string> variables) {
  return [variables](const std::string& name) -> std::optional<std::string> {
    const auto it = variables.find(name);
    if (it == variables.end()) return std::nullopt;
    return it->second;
  };
}

const std::map<std::string, std::string> kTorchrun = {{"RANK", "3"},        {"LOCAL_RANK", "1"},
                                                      {"WORLD_SIZE", "4"},  {"LOCAL_WORLD_SIZE", "2"},
                                                      {"MASTER_ADDR", "h0"}, {"MASTER_PORT", "29501"}};

TEST(DistEnv, SingleProcessWithoutVariables) {
  const DistEnv env = read_dist_env(fake({}));
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.rank, 0);
  EXPECT_FALSE(env.distributed());
  EXPECT_EQ(env.source, "single");
}

TEST(DistEnv, TorchrunContract) {
  const DistEnv env = read_dist_env(fake(kTorchrun));
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.master_addr, "h0");
  EXPECT_EQ(env.master_port, 29501);
  EXPECT_TRUE(env.distributed());
}

TEST(DistEnv, TorchrunErrorsNameTheVariable) {
  for (const char* name : {"RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
    auto variables = kTorchrun;
    variables.erase(name);
    expect_error([&] { read_dist_env(fake(variables)); }, {name, "not set"});
  }
  auto bad = kTorchrun;
  bad["WORLD_SIZE"] = "4x";
  expect_error([&] { read_dist_env(fake(bad)); }, {"WORLD_SIZE='4x'", "not an integer"});
  bad = kTorchrun;
  bad["RANK"] = "4";
  expect_error([&] { read_dist_env(fake(bad)); }, {"RANK 4", "WORLD_SIZE 4"});
  bad = kTorchrun;
  bad["LOCAL_RANK"] = "2";
  expect_error([&] { read_dist_env(fake(bad)); }, {"LOCAL_RANK 2"});
  bad = kTorchrun;
  bad["LOCAL_WORLD_SIZE"] = "3";
  expect_error([&] { read_dist_env(fake(bad)); }, {"not a multiple of LOCAL_WORLD_SIZE 3"});
  bad = kTorchrun;
  bad["MASTER_PORT"] = "70000";
  expect_error([&] { read_dist_env(fake(bad)); }, {"MASTER_PORT 70000"});
}

TEST(DistEnv, SlurmMapping) {
  std::map<std::string, std::string> slurm = {{"SLURM_PROCID", "5"},         {"SLURM_LOCALID", "1"},
                                              {"SLURM_NTASKS", "8"},         {"SLURM_TASKS_PER_NODE", "4(x2)"},
                                              {"MASTER_ADDR", "node01"}};
  const DistEnv env = read_dist_env(fake(slurm));
  EXPECT_EQ(env.source, "slurm");
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_EQ(env.master_port, 29500);
  slurm["SLURM_TASKS_PER_NODE"] = "4,3";
  expect_error([&] { read_dist_env(fake(slurm)); }, {"SLURM_TASKS_PER_NODE='4,3'"});
  slurm.erase("MASTER_ADDR");
  slurm["SLURM_TASKS_PER_NODE"] = "4(x2)";
  expect_error([&] { read_dist_env(fake(slurm)); }, {"MASTER_ADDR"});
}

}  // namespace
}  // namespace longtune::dist
