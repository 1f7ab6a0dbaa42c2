// Where this process sits in a distributed run, read from the environment in exactly one place:
// torchrun's contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, as
// longtune-run and torchrun set them), else SLURM's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
// SLURM_NTASKS_PER_NODE, with MASTER_ADDR/MASTER_PORT from the environment), else a single process.
// A missing, malformed or inconsistent variable is an error naming it. Not the process group.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace longtune::dist {

struct DistEnv {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  int local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // "torchrun" | "slurm" | "single"
  // torchrun's elastic agent or longtune-run hosts the rendezvous store itself
  // (TORCHELASTIC_USE_AGENT_STORE=True); otherwise rank 0 hosts it, as under SLURM.
  bool agent_hosts_store = false;
  int restart_count = 0;  // TORCHELASTIC_RESTART_COUNT: scopes store keys per attempt
  std::string gloo_interface;  // GLOO_SOCKET_IFNAME: the network interface Gloo binds ("" = by hostname)

  bool distributed() const { return world_size > 1; }
};

// `lookup` returns a variable's value or nullopt; the default reads the process environment.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// Throws longtune::Error naming the variable on a missing, non-integer or out-of-range value.
DistEnv read_dist_env(const EnvLookup& lookup = process_environment());

}  // namespace longtune::dist
