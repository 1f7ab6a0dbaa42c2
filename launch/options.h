// The command line of longtune-run: torchrun's flags and meanings (dash and underscore spellings,
// PET_<NAME> environment fallbacks), parsed once into LaunchOptions and validated. Only static
// rendezvous (fixed --node-rank, node 0 hosts the store; and --standalone) is supported: elastic node
// ranges, c10d/etcd rendezvous (ranks assigned at join) and Python module launching (-m, --run-path)
// are refused with an error that names the flag.
#pragma once

#include "common/check.h"

#include <map>
#include <set>
#include <string>
#include <vector>

namespace longtune::launch {

// A bad command line: main() prints it with the usage hint and exits 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

// torchrun's --redirects / --tee value: bit 1 = stdout, bit 2 = stderr, for all local ranks or per
// local rank ("3" or "0:1,1:2").
struct StreamSpec {
  int all = 0;                   // used for local ranks not listed in per_rank
  std::map<int, int> per_rank;   // local rank -> bits
  int for_rank(int local_rank) const;
};

struct LaunchOptions {
  int nproc_per_node = 1;            // workers on this node
  int nnodes = 1;                    // nodes in the job (static: every node runs one launcher)
  int node_rank = 0;                 // this node's index; becomes GROUP_RANK
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool standalone = false;           // single node, MASTER_ADDR=localhost, a free port, uuid run id
  std::string run_id = "none";       // --rdzv-id; TORCHELASTIC_RUN_ID and the log subfolder prefix
  std::string role = "default";      // ROLE_NAME and the tee prefix
  int max_restarts = 0;              // rounds after the first: every failure anywhere consumes one
  double rdzv_timeout_s = 600;       // --rdzv-timeout (or --rdzv-conf join_timeout): a round must close within it
  double keep_alive_interval_s = 5;  // --rdzv-conf keep_alive_interval: a launcher's keep-alive period
  int keep_alive_max_attempt = 3;    // --rdzv-conf keep_alive_max_attempt: missed ones before a node is dead
  double monitor_interval_s = 0.1;   // upper bound between two checks of the workers
  double stop_grace_s = 30.0;        // SIGTERM -> SIGKILL delay when stopping workers
  std::string log_dir;               // empty: a fresh folder under $TMPDIR, as torchrun
  StreamSpec redirects;              // streams sent to the per-rank files only
  StreamSpec tee;                    // streams sent to the files and the console (prefixed)
  std::set<int> local_ranks_filter;  // ranks whose output reaches the console; empty = all
  std::vector<int> signals_to_handle;  // forwarded to the workers, then the launcher exits
  std::string signals_to_handle_text;  // as given (TORCHELASTIC_SIGNALS_TO_HANDLE)
  std::vector<std::string> command;  // PROGRAM ARGS...
  bool help = false;                 // -h/--help: print usage() and exit 0
};

// Parses argv[1..] (args excludes argv[0]). Reads PET_<NAME> for flags not given. Throws UsageError.
LaunchOptions parse_options(const std::vector<std::string>& args);

// The --help text.
std::string usage();

// Number of workers for --nproc-per-node gpu|cpu|auto (GPUs from CUDA_VISIBLE_DEVICES or /dev/nvidiaN).
int resolve_nproc(const std::string& value);

}  // namespace longtune::launch
