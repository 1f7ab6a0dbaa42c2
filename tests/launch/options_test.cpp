// launch/options.cpp: torchrun's spellings (dash, underscore, abbreviations, PET_ variables), the
// PROGRAM boundary, stream maps, refused flags; and the environment worker_group gives a worker.
#include "launch/options.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <map>

#include "launch/worker_group.h"
#include "tests/test_support.h"

namespace longtune::launch {
namespace {

LaunchOptions parse(std::vector<std::string> args) { return parse_options(args); }

void expect_usage_error(std::vector<std::string> args, const std::string& part) {
  try {
    parse_options(args);
    ADD_FAILURE() << "no UsageError for " << ::testing::PrintToString(args);
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

std::map<std::string, std::string> as_map(const std::vector<std::string>& env) {
  std::map<std::string, std::string> out;
  for (const std::string& kv : env) out[kv.substr(0, kv.find('='))] = kv.substr(kv.find('=') + 1);
  return out;
}

TEST(LaunchOptions, AcceptsTorchrunSpellings) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--nproc-per-node", "3", "prog"},
                                                                {"--nproc_per_node=3", "prog"},
                                                                {"--nproc", "3", "prog"}}) {
    EXPECT_EQ(parse(args).nproc_per_node, 3);
  }
  const LaunchOptions o = parse({"--nnodes=2:2", "--node_rank", "1", "--master_addr", "h", "--master-port=7",
                                 "--max_restarts", "4", "--no-python", "-t3", "-r", "0:1,1:2", "prog"});
  EXPECT_EQ(o.nnodes, 2);
  EXPECT_EQ(o.node_rank, 1);
  EXPECT_EQ(o.master_addr, "h");
  EXPECT_EQ(o.master_port, 7);
  EXPECT_EQ(o.max_restarts, 4);
  EXPECT_EQ(o.tee.for_rank(5), 3);
  EXPECT_EQ(o.redirects.for_rank(0), 1);
  EXPECT_EQ(o.redirects.for_rank(1), 2);
  EXPECT_EQ(o.redirects.for_rank(2), 0);
}

TEST(LaunchOptions, EverythingFromProgramOnBelongsToTheWorker) {
  EXPECT_EQ(parse({"prog", "--nproc-per-node", "5"}).command,
            (std::vector<std::string>{"prog", "--nproc-per-node", "5"}));
  EXPECT_EQ(parse({"--", "-weird", "x"}).command, (std::vector<std::string>{"-weird", "x"}));
  EXPECT_EQ(parse({"prog"}).nproc_per_node, 1);
}

TEST(LaunchOptions, StaticEndpointAndDefaults) {
  const LaunchOptions o = parse({"--rdzv-endpoint", "node0:1234", "--rdzv-id", "job", "prog"});
  EXPECT_EQ(o.master_addr, "node0");
  EXPECT_EQ(o.master_port, 1234);
  EXPECT_EQ(o.run_id, "job");
  const LaunchOptions d = parse({"prog"});
  EXPECT_EQ(d.master_addr, "127.0.0.1");
  EXPECT_EQ(d.master_port, 29500);
  EXPECT_EQ(d.run_id, "none");
  EXPECT_EQ(d.role, "default");
  EXPECT_DOUBLE_EQ(d.stop_grace_s, 30);
  EXPECT_EQ(d.signals_to_handle.size(), 4u);
}

TEST(LaunchOptions, PetVariablesFillWhatTheCommandLineLeaves) {
  setenv("PET_NNODES", "4", 1);
  setenv("PET_NODE_RANK", "3", 1);
  const LaunchOptions o = parse({"--node-rank", "2", "prog"});
  unsetenv("PET_NNODES");
  unsetenv("PET_NODE_RANK");
  EXPECT_EQ(o.nnodes, 4);
  EXPECT_EQ(o.node_rank, 2);
}

TEST(LaunchOptions, RefusesWhatItCannotDo) {
  expect_usage_error({"--nnodes", "1:4", "prog"}, "elastic");
  expect_usage_error({"--rdzv-backend", "c10d", "prog"}, "static");
  expect_usage_error({"-m", "prog"}, "--module");
  expect_usage_error({"--nnodes", "2", "--node-rank", "2", "prog"}, "--node-rank");
  expect_usage_error({"--tee", "4", "prog"}, "--tee");
  expect_usage_error({"--frobnicate", "prog"}, "unknown option");
  expect_usage_error({"--n", "2", "prog"}, "ambiguous");
  expect_usage_error({"--nproc-per-node", "2"}, "missing PROGRAM");
  expect_usage_error({"--max-restarts"}, "needs a value");
  expect_usage_error({"--signals-to-handle", "SIGFOO", "prog"}, "SIGFOO");
  expect_usage_error({"--standalone", "--nnodes", "2", "prog"}, "--standalone");
}

TEST(LaunchOptions, RendezvousTimeoutFromFlagPetVariableOrRdzvConf) {
  EXPECT_DOUBLE_EQ(parse({"prog"}).rdzv_timeout_s, 600);
  EXPECT_DOUBLE_EQ(parse({"--rdzv-timeout", "30", "prog"}).rdzv_timeout_s, 30);
  EXPECT_DOUBLE_EQ(parse({"--rdzv_timeout=2.5", "prog"}).rdzv_timeout_s, 2.5);
  setenv("PET_RDZV_TIMEOUT", "45", 1);
  const double from_env = parse({"prog"}).rdzv_timeout_s;
  const double flag_wins = parse({"--rdzv-timeout", "7", "prog"}).rdzv_timeout_s;
  unsetenv("PET_RDZV_TIMEOUT");
  EXPECT_DOUBLE_EQ(from_env, 45);
  EXPECT_DOUBLE_EQ(flag_wins, 7);
  const LaunchOptions c = parse({"--rdzv-conf", "join_timeout=20,keep_alive_interval=1.5,keep_alive_max_attempt=2",
                                 "prog"});
  EXPECT_DOUBLE_EQ(c.rdzv_timeout_s, 20);
  EXPECT_DOUBLE_EQ(c.keep_alive_interval_s, 1.5);
  EXPECT_EQ(c.keep_alive_max_attempt, 2);
  EXPECT_DOUBLE_EQ(parse({"--rdzv-conf", "join_timeout=20", "--rdzv-timeout", "9", "prog"}).rdzv_timeout_s, 9);
  const LaunchOptions d = parse({"prog"});
  EXPECT_DOUBLE_EQ(d.keep_alive_interval_s, 5);
  EXPECT_EQ(d.keep_alive_max_attempt, 3);
  expect_usage_error({"--rdzv-timeout", "0", "prog"}, "--rdzv-timeout");
  expect_usage_error({"--rdzv-timeout", "soon", "prog"}, "--rdzv-timeout");
  expect_usage_error({"--rdzv-conf", "last_call_timeout=3", "prog"}, "last_call_timeout");
  expect_usage_error({"--rdzv-conf", "join_timeout", "prog"}, "KEY=VALUE");
  expect_usage_error({"--rdzv-conf", "keep_alive_max_attempt=0", "prog"}, "keep_alive_max_attempt");
}

TEST(LaunchOptions, StaticBackendWithAnEndpointIsAccepted) {
  const LaunchOptions o = parse({"--rdzv-backend", "static", "--rdzv-endpoint", "node0:29400", "--nnodes", "2",
                                 "--node-rank", "1", "prog"});
  EXPECT_EQ(o.master_addr, "node0");
  EXPECT_EQ(o.master_port, 29400);
  expect_usage_error({"--rdzv-backend", "etcd", "prog"}, "only static");
}

TEST(WorkerEnvironment, RanksFollowStaticRendezvous) {
  const LaunchOptions o = parse({"--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "4", "--role", "r",
                                 "--max-restarts", "3", "prog"});
  unsetenv("OMP_NUM_THREADS");
  const auto env = as_map(worker_environment(o, /*local_rank=*/3, /*restart_count=*/2, "/e.json"));
  EXPECT_EQ(env.at("RANK"), "7");
  EXPECT_EQ(env.at("LOCAL_RANK"), "3");
  EXPECT_EQ(env.at("WORLD_SIZE"), "8");
  EXPECT_EQ(env.at("ROLE_WORLD_SIZE"), "8");
  EXPECT_EQ(env.at("ROLE_RANK"), "7");
  EXPECT_EQ(env.at("ROLE_NAME"), "r");
  EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "4");
  EXPECT_EQ(env.at("GROUP_RANK"), "1");
  EXPECT_EQ(env.at("GROUP_WORLD_SIZE"), "2");
  EXPECT_EQ(env.at("TORCHELASTIC_RESTART_COUNT"), "2");
  EXPECT_EQ(env.at("TORCHELASTIC_MAX_RESTARTS"), "3");
  EXPECT_EQ(env.at("TORCHELASTIC_ERROR_FILE"), "/e.json");
  EXPECT_EQ(env.at("TORCHELASTIC_USE_AGENT_STORE"), "True");  // node 0's launcher hosts the store
  EXPECT_EQ(env.at("OMP_NUM_THREADS"), "1");
  setenv("OMP_NUM_THREADS", "6", 1);
  EXPECT_EQ(as_map(worker_environment(o, 0, 0, "")).at("OMP_NUM_THREADS"), "6");
  unsetenv("OMP_NUM_THREADS");
  EXPECT_EQ(as_map(worker_environment(parse({"prog"}), 0, 0, "")).count("OMP_NUM_THREADS"), 0u);
}

}  // namespace
}  // namespace longtune::launch
