// Parsing of longtune-run's command line into LaunchOptions (see options.h). The flag table mirrors
// torch/distributed/run.py of torch 2.11; flags that only make sense for Python workers or elastic
// rendezvous are recognised so that the error says why they are refused.
#include "launch/options.h"

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <unistd.h>

namespace longtune::launch {
namespace {

struct Flag {
  const char* name;   // dash spelling without the leading "--"
  bool takes_value;
  const char* short_name;  // "-r" style alias or nullptr
};

// Every flag torchrun 2.11 has, plus --stop-grace-period (ours: torchrun hard-codes 30 s) and
// --rdzv-timeout (ours: torchrun's is --rdzv-conf join_timeout=S).
constexpr Flag kFlags[] = {
    {"nnodes", true, nullptr},           {"nproc-per-node", true, nullptr},
    {"node-rank", true, nullptr},        {"master-addr", true, nullptr},
    {"master-port", true, nullptr},      {"rdzv-backend", true, nullptr},
    {"rdzv-endpoint", true, nullptr},    {"rdzv-id", true, nullptr},
    {"rdzv-conf", true, nullptr},        {"standalone", false, nullptr},
    {"max-restarts", true, nullptr},     {"monitor-interval", true, nullptr},
    {"start-method", true, nullptr},     {"role", true, nullptr},
    {"module", false, "-m"},             {"no-python", false, nullptr},
    {"run-path", false, nullptr},        {"log-dir", true, nullptr},
    {"redirects", true, "-r"},           {"tee", true, "-t"},
    {"local-ranks-filter", true, nullptr}, {"local-addr", true, nullptr},
    {"logs-specs", true, nullptr},       {"numa-binding", true, nullptr},
    {"signals-to-handle", true, nullptr}, {"event-log-handler", true, nullptr},
    {"stop-grace-period", true, nullptr}, {"rdzv-timeout", true, nullptr},
    {"help", false, "-h"},
};

// Exact name, else a unique prefix (argparse's allow_abbrev, which torchrun keeps on).
const Flag* find_flag(const std::string& name) {
  const Flag* match = nullptr;
  int prefix_matches = 0;
  for (const Flag& f : kFlags) {
    if (name == f.name) return &f;
    if (!name.empty() && std::string(f.name).rfind(name, 0) == 0) {
      match = &f;
      ++prefix_matches;
    }
  }
  if (prefix_matches > 1) throw UsageError(fmt::format("ambiguous option '--{}'", name));
  return match;
}

const Flag* find_short(const std::string& arg) {
  for (const Flag& f : kFlags) {
    if (f.short_name != nullptr && arg == f.short_name) return &f;
  }
  return nullptr;
}

// "PET_NPROC_PER_NODE" for "nproc-per-node".
std::string pet_name(const std::string& name) {
  std::string out = "PET_";
  for (char c : name) out += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return out;
}

long parse_int(const std::string& flag, const std::string& text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw UsageError(fmt::format("--{}: expected an integer in [{}, {}], got '{}'", flag, lo, hi, text));
  }
  return v;
}

double parse_seconds(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(v >= 0) || v > 1e6) {
    throw UsageError(fmt::format("--{}: expected seconds >= 0, got '{}'", flag, text));
  }
  return v;
}

StreamSpec parse_streams(const std::string& flag, const std::string& text) {
  StreamSpec spec;
  if (text.find(':') == std::string::npos) {
    spec.all = static_cast<int>(parse_int(flag, text, 0, 3));
    return spec;
  }
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string item = text.substr(pos, comma - pos);
    const size_t colon = item.find(':');
    if (colon == std::string::npos) {
      throw UsageError(fmt::format("--{}: expected N or LOCAL_RANK:N,..., got '{}'", flag, text));
    }
    const int rank = static_cast<int>(parse_int(flag, item.substr(0, colon), 0, 1 << 20));
    spec.per_rank[rank] = static_cast<int>(parse_int(flag, item.substr(colon + 1), 0, 3));
    pos = comma + 1;
  }
  return spec;
}

int signal_number(const std::string& name) {
  static const std::map<std::string, int> kSignals = {
      {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT},   {"SIGHUP", SIGHUP},   {"SIGQUIT", SIGQUIT},
      {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGABRT", SIGABRT}, {"SIGALRM", SIGALRM}};
  const auto it = kSignals.find(name);
  if (it == kSignals.end()) {
    throw UsageError(fmt::format("--signals-to-handle: unknown signal '{}' (use names like SIGTERM)", name));
  }
  return it->second;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t next = std::min(text.find(sep, pos), text.size());
    if (next > pos) out.push_back(text.substr(pos, next - pos));
    pos = next + 1;
  }
  return out;
}

// torchrun's --rdzv-conf k=v,...: the keys that mean something for our rendezvous; any other is refused
// by name rather than ignored.
void parse_rdzv_conf(const std::string& text, LaunchOptions& o) {
  for (const std::string& item : split(text, ',')) {
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw UsageError(fmt::format("--rdzv-conf: expected KEY=VALUE, got '{}'", item));
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "join_timeout" || key == "timeout") {
      o.rdzv_timeout_s = parse_seconds("rdzv-conf " + key, value);
    } else if (key == "keep_alive_interval") {
      o.keep_alive_interval_s = parse_seconds("rdzv-conf keep_alive_interval", value);
      if (o.keep_alive_interval_s <= 0) throw UsageError("--rdzv-conf keep_alive_interval: must be more than 0");
    } else if (key == "keep_alive_max_attempt") {
      o.keep_alive_max_attempt = static_cast<int>(parse_int("rdzv-conf keep_alive_max_attempt", value, 1, 1000));
    } else {
      throw UsageError(fmt::format("--rdzv-conf {}: not supported by longtune-run (known: join_timeout, "
                                   "keep_alive_interval, keep_alive_max_attempt)", key));
    }
  }
}

}  // namespace

int StreamSpec::for_rank(int local_rank) const {
  const auto it = per_rank.find(local_rank);
  return it == per_rank.end() ? all : it->second;
}

int resolve_nproc(const std::string& value) {
  const int cpus = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (value == "cpu") return cpus;
  int gpus = 0;
  if (const char* visible = std::getenv("CUDA_VISIBLE_DEVICES"); visible != nullptr) {
    gpus = static_cast<int>(split(visible, ',').size());
  } else {
    while (std::filesystem::exists(fmt::format("/dev/nvidia{}", gpus))) ++gpus;
  }
  if (value == "auto") return gpus > 0 ? gpus : cpus;
  if (value == "gpu") {
    if (gpus == 0) throw UsageError("--nproc-per-node gpu: no GPU is visible on this node");
    return gpus;
  }
  return static_cast<int>(parse_int("nproc-per-node", value, 1, 1 << 16));
}

LaunchOptions parse_options(const std::vector<std::string>& args) {
  std::map<std::string, std::string> given;  // flag name -> value ("1" for booleans)
  LaunchOptions o;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') break;  // PROGRAM: everything from here is the worker's
    const Flag* flag = nullptr;
    std::string value;
    bool has_value = false;
    if (arg.rfind("--", 0) == 0) {
      std::string name = arg.substr(2);
      if (const size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
      for (char& c : name) c = c == '_' ? '-' : c;
      flag = find_flag(name);
    } else {
      flag = find_short(arg.substr(0, 2));
      if (flag != nullptr && arg.size() > 2) {
        value = arg.substr(arg[2] == '=' ? 3 : 2);
        has_value = true;
      }
    }
    if (flag == nullptr) throw UsageError(fmt::format("unknown option '{}'", arg));
    if (!flag->takes_value) {
      if (has_value) throw UsageError(fmt::format("--{} takes no value", flag->name));
      value = "1";
    } else if (!has_value) {
      if (i + 1 >= args.size()) throw UsageError(fmt::format("--{} needs a value", flag->name));
      value = args[++i];
    }
    given[flag->name] = value;
  }
  o.command.assign(args.begin() + static_cast<long>(i), args.end());

  // Flags not on the command line come from PET_<NAME>, as in torchrun.
  for (const Flag& f : kFlags) {
    if (given.count(f.name) != 0) continue;
    if (const char* env = std::getenv(pet_name(f.name).c_str()); env != nullptr) given[f.name] = env;
  }
  auto has = [&](const char* name) { return given.count(name) != 0; };
  auto get = [&](const char* name, const std::string& fallback) {
    return has(name) ? given[name] : fallback;
  };
  auto flag_on = [&](const char* name) { return has(name) && given[name] != "0" && !given[name].empty(); };

  if (flag_on("help")) {
    o.help = true;
    return o;
  }
  if (flag_on("module") || flag_on("run-path")) {
    throw UsageError("-m/--module and --run-path launch Python modules; longtune-run always execs "
                     "PROGRAM directly (as torchrun --no-python)");
  }
  for (const char* unsupported : {"logs-specs", "numa-binding", "event-log-handler"}) {
    if (has(unsupported) && !given[unsupported].empty()) {
      throw UsageError(fmt::format("--{} is not supported by longtune-run", unsupported));
    }
  }
  const std::string start_method = get("start-method", "spawn");
  if (start_method != "spawn" && start_method != "fork" && start_method != "forkserver") {
    throw UsageError(fmt::format("--start-method: expected spawn|fork|forkserver, got '{}'", start_method));
  }

  o.standalone = flag_on("standalone");
  const std::string backend = get("rdzv-backend", "static");
  if (!o.standalone && backend != "static") {
    throw UsageError(fmt::format(
        "--rdzv-backend {}: only static rendezvous is supported (fixed --node-rank per node; node 0's "
        "launcher hosts the store at --master-addr:--master-port or --rdzv-endpoint and restarts are "
        "still agreed by every node), or --standalone on one node", backend));
  }
  const std::string nnodes = get("nnodes", "1");
  if (const size_t colon = nnodes.find(':'); colon != std::string::npos) {
    const long lo = parse_int("nnodes", nnodes.substr(0, colon), 1, 1 << 16);
    const long hi = parse_int("nnodes", nnodes.substr(colon + 1), 1, 1 << 16);
    if (lo != hi) throw UsageError(fmt::format("--nnodes {}: elastic ranges (MIN != MAX) are not supported", nnodes));
    o.nnodes = static_cast<int>(lo);
  } else {
    o.nnodes = static_cast<int>(parse_int("nnodes", nnodes, 1, 1 << 16));
  }
  o.nproc_per_node = resolve_nproc(get("nproc-per-node", "1"));
  o.node_rank = static_cast<int>(parse_int("node-rank", get("node-rank", "0"), 0, o.nnodes - 1));
  o.master_addr = get("master-addr", "127.0.0.1");
  o.master_port = static_cast<int>(parse_int("master-port", get("master-port", "29500"), 0, 65535));
  if (const std::string endpoint = get("rdzv-endpoint", ""); !endpoint.empty() && !o.standalone) {
    // Static rendezvous with an endpoint: host[:port] replaces --master-addr/--master-port.
    const size_t colon = endpoint.rfind(':');
    o.master_addr = endpoint.substr(0, colon);
    if (colon != std::string::npos) {
      o.master_port = static_cast<int>(parse_int("rdzv-endpoint", endpoint.substr(colon + 1), 0, 65535));
    }
  }
  o.run_id = get("rdzv-id", "none");
  if (o.standalone) {
    if (o.nnodes != 1) throw UsageError("--standalone runs one node; drop --nnodes or set it to 1");
    o.node_rank = 0;
  }
  o.role = get("role", "default");
  o.max_restarts = static_cast<int>(parse_int("max-restarts", get("max-restarts", "0"), 0, 1 << 20));
  o.monitor_interval_s = parse_seconds("monitor-interval", get("monitor-interval", "0.1"));
  o.stop_grace_s = parse_seconds("stop-grace-period", get("stop-grace-period", "30"));
  parse_rdzv_conf(get("rdzv-conf", ""), o);
  if (has("rdzv-timeout")) o.rdzv_timeout_s = parse_seconds("rdzv-timeout", given["rdzv-timeout"]);
  if (o.rdzv_timeout_s <= 0) throw UsageError("--rdzv-timeout: must be more than 0 seconds");
  o.log_dir = get("log-dir", "");
  o.redirects = parse_streams("redirects", get("redirects", "0"));
  o.tee = parse_streams("tee", get("tee", "0"));
  for (const std::string& r : split(get("local-ranks-filter", ""), ',')) {
    o.local_ranks_filter.insert(static_cast<int>(parse_int("local-ranks-filter", r, 0, 1 << 20)));
  }
  o.signals_to_handle_text = get("signals-to-handle", "SIGTERM,SIGINT,SIGHUP,SIGQUIT");
  for (const std::string& s : split(o.signals_to_handle_text, ',')) o.signals_to_handle.push_back(signal_number(s));

  if (o.command.empty()) throw UsageError("missing PROGRAM to launch");
  return o;
}

std::string usage() {
  return R"(usage: longtune-run [options] PROGRAM [ARGS...]

Starts --nproc-per-node copies of PROGRAM with torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, ...), stops them all when one fails on any node and restarts every node's
group in the next round agreed through node 0's store, up to --max-restarts rounds. PROGRAM is
always executed directly (torchrun --no-python).

  --nproc-per-node N|cpu|gpu|auto   workers on this node (default 1)
  --nnodes N                        nodes in the job (default 1)
  --node-rank R                     this node's index (default 0)
  --master-addr H, --master-port P  node 0's store, hosted by its launcher (default 127.0.0.1:29500)
  --rdzv-endpoint H[:P]             same as --master-addr/--master-port (--rdzv-backend static only)
  --rdzv-id ID                      run id: TORCHELASTIC_RUN_ID, log folder prefix (default none)
  --standalone                      one node: MASTER_ADDR=localhost, a free port, a random run id
  --max-restarts K                  restart rounds after a failure on any node (default 0)
  --rdzv-timeout S                  a round must close (every node joined) within S s (default 600)
  --rdzv-conf K=V,...               join_timeout=S, keep_alive_interval=S (5), keep_alive_max_attempt=N (3)
  --monitor-interval S              seconds between worker checks (default 0.1)
  --stop-grace-period S             SIGTERM to SIGKILL delay when stopping workers (default 30)
  --log-dir D                       D/<run id>_XXXXXX/attempt_<k>/<local rank>/{stdout,stderr}.log
  -r, --redirects N|R:N,...         streams to the log files only: 1 stdout, 2 stderr, 3 both
  -t, --tee N|R:N,...               streams to the log files and the console, as "[<role><local rank>]:"
  --local-ranks-filter R,...        local ranks whose output reaches the console
  --role NAME                       ROLE_NAME (default "default")
  --signals-to-handle SIG,...       forwarded to workers (default SIGTERM,SIGINT,SIGHUP,SIGQUIT)
  --no-python, --start-method M     accepted for torchrun compatibility (always implied / ignored)
Each valued flag also reads PET_<NAME> (e.g. PET_NPROC_PER_NODE); '_' and '-' spellings both work.
Exit status: 0 if every worker succeeded; 1 if a worker failed after all restarts (as torchrun); on a
forwarded signal, the workers' common exit code, else 128+signal; 2 for a bad command line.
)";
}

}  // namespace longtune::launch
