#include "dist/dist_env.h"

#include <cstdlib>

#include "common/check.h"

namespace longtune::dist {
namespace {

int parse_int(const EnvLookup& lookup, const std::string& name, const std::string& contract) {
  const std::optional<std::string> value = lookup(name);
  LT_CHECK(value.has_value(), "environment variable {} is not set ({} sets it; every worker needs it)", name,
           contract);
  size_t used = 0;
  long long number = 0;
  try {
    number = std::stoll(*value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LT_CHECK(used == value->size() && !value->empty(), "environment variable {}='{}' is not an integer", name,
           *value);
  LT_CHECK(number >= 0 && number <= 1'000'000, "environment variable {}={} is out of range", name, number);
  return static_cast<int>(number);
}

// SLURM_NTASKS_PER_NODE is "4", or SLURM_TASKS_PER_NODE "4(x2)" / "4,3": the first count applies
// to the first nodes; a heterogeneous layout is refused since every node must run as many ranks.
int slurm_tasks_per_node(const EnvLookup& lookup) {
  if (lookup("SLURM_NTASKS_PER_NODE")) return parse_int(lookup, "SLURM_NTASKS_PER_NODE", "SLURM");
  const std::optional<std::string> layout = lookup("SLURM_TASKS_PER_NODE");
  LT_CHECK(layout.has_value(), "neither SLURM_NTASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set under SLURM");
  LT_CHECK(layout->find(',') == std::string::npos,
           "SLURM_TASKS_PER_NODE='{}': nodes run different numbers of tasks; every node needs the same count",
           *layout);
  const std::string count = layout->substr(0, layout->find('('));
  return parse_int([&](const std::string&) { return std::optional<std::string>(count); }, "SLURM_TASKS_PER_NODE",
                   "SLURM");
}

}  // namespace

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

DistEnv read_dist_env(const EnvLookup& lookup) {
  DistEnv env;
  if (lookup("WORLD_SIZE") || lookup("RANK")) {
    const std::string contract = "torchrun / longtune-run";
    env.source = "torchrun";
    env.world_size = parse_int(lookup, "WORLD_SIZE", contract);
    env.rank = parse_int(lookup, "RANK", contract);
    env.local_rank = parse_int(lookup, "LOCAL_RANK", contract);
    env.local_world_size = parse_int(lookup, "LOCAL_WORLD_SIZE", contract);
    const std::optional<std::string> addr = lookup("MASTER_ADDR");
    LT_CHECK(addr.has_value() && !addr->empty(), "environment variable MASTER_ADDR is not set ({} sets it)",
             contract);
    env.master_addr = *addr;
    env.master_port = parse_int(lookup, "MASTER_PORT", contract);
    env.agent_hosts_store = lookup("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True";
    if (lookup("TORCHELASTIC_RESTART_COUNT")) env.restart_count = parse_int(lookup, "TORCHELASTIC_RESTART_COUNT", contract);
  } else if (lookup("SLURM_PROCID")) {
    env.source = "slurm";
    env.rank = parse_int(lookup, "SLURM_PROCID", "SLURM");
    env.world_size = parse_int(lookup, "SLURM_NTASKS", "SLURM");
    env.local_rank = parse_int(lookup, "SLURM_LOCALID", "SLURM");
    env.local_world_size = slurm_tasks_per_node(lookup);
    const std::optional<std::string> addr = lookup("MASTER_ADDR");
    LT_CHECK(addr.has_value() && !addr->empty(),
             "under SLURM, set MASTER_ADDR to the first node's address (e.g. export MASTER_ADDR=$(scontrol show "
             "hostnames $SLURM_JOB_NODELIST | head -n 1))");
    env.master_addr = *addr;
    if (lookup("MASTER_PORT")) env.master_port = parse_int(lookup, "MASTER_PORT", "SLURM");
  }
  env.gloo_interface = lookup("GLOO_SOCKET_IFNAME").value_or("");
  LT_CHECK(env.world_size >= 1, "WORLD_SIZE must be >= 1, got {}", env.world_size);
  LT_CHECK(env.rank < env.world_size, "RANK {} is not below WORLD_SIZE {}", env.rank, env.world_size);
  LT_CHECK(env.local_world_size >= 1 && env.local_world_size <= env.world_size,
           "LOCAL_WORLD_SIZE {} must be in [1, WORLD_SIZE {}]", env.local_world_size, env.world_size);
  LT_CHECK(env.local_rank < env.local_world_size, "LOCAL_RANK {} is not below LOCAL_WORLD_SIZE {}", env.local_rank,
           env.local_world_size);
  LT_CHECK(env.world_size % env.local_world_size == 0,
           "WORLD_SIZE {} is not a multiple of LOCAL_WORLD_SIZE {}: every node must run as many ranks",
           env.world_size, env.local_world_size);
  LT_CHECK(env.master_port >= 1 && env.master_port <= 65535, "MASTER_PORT {} is not a TCP port", env.master_port);
  return env;
}

}  // namespace longtune::dist
