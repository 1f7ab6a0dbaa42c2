// Worker processes of one node (see worker_group.h): fork + execvp with torchrun's environment, each
// worker in its own process group (so a stop also reaches its children), a self-pipe for signals and
// SIGCHLD, and poll() over the teed pipes so that one thread prefixes output, watches exits and
// polls the round (the rendezvous store is read between two polls, never blocking on workers).
#include "launch/worker_group.h"

#include "common/file_io.h"
#include "launch/output_stream.h"
#include "launch/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>

extern char** environ;

namespace longtune::launch {
namespace {

namespace fs = std::filesystem;

double now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void log_launcher(const std::string& message) {
  const std::string line = "longtune-run: " + message + "\n";
  write_all(STDERR_FILENO, line.data(), line.size());
}

// Signals (and SIGCHLD) become bytes on a non-blocking pipe that poll() watches.
int g_signal_pipe_write = -1;
void on_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  if (g_signal_pipe_write >= 0) (void)!write(g_signal_pipe_write, &byte, 1);
  errno = saved;
}

class SignalPipe {
 public:
  explicit SignalPipe(const std::vector<int>& signals) : signals_(signals) {
    LT_CHECK(pipe2(fds_, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2: {}", std::strerror(errno));
    g_signal_pipe_write = fds_[1];
    signals_.push_back(SIGCHLD);
    for (int sig : signals_) {
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sa.sa_flags = SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(sig, &sa, nullptr);
    }
  }
  ~SignalPipe() {
    for (int sig : signals_) signal(sig, SIG_DFL);
    g_signal_pipe_write = -1;
    close(fds_[0]);
    close(fds_[1]);
  }
  int fd() const { return fds_[0]; }
  // Handled signals received since the last call (SIGCHLD only wakes the loop up).
  std::vector<int> drain() {
    std::vector<int> out;
    unsigned char buf[64];
    ssize_t n;
    while ((n = read(fds_[0], buf, sizeof(buf))) > 0) {
      for (ssize_t i = 0; i < n; ++i) {
        if (buf[i] != SIGCHLD) out.push_back(buf[i]);
      }
    }
    return out;
  }

 private:
  int fds_[2] = {-1, -1};
  std::vector<int> signals_;
};

struct Worker {
  int local_rank = 0;
  int rank = 0;
  pid_t pid = -1;
  bool alive = false;
  int status = 0;      // raw waitpid status once dead
  double ended = 0;    // when the launcher reaped it
  OutputStream out, err;
  std::string error_file;
};

// Everything the child needs for one of its standard streams, opened in the parent.
struct ChildFd {
  int fd = -1;  // to dup2 onto 1 or 2; -1 = inherit the launcher's
};

ChildFd setup_stream(const LaunchOptions& o, int local_rank, int bit, const fs::path& rank_dir,
                     int console_fd, OutputStream& stream) {
  const bool in_filter = o.local_ranks_filter.empty() || o.local_ranks_filter.count(local_rank) != 0;
  const bool teed = (o.tee.for_rank(local_rank) & bit) != 0;
  const bool redirected = (o.redirects.for_rank(local_rank) & bit) != 0;
  const std::string path = (rank_dir / (bit == 1 ? "stdout.log" : "stderr.log")).string();
  ChildFd child;
  if (teed || redirected) {
    const int file = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    LT_CHECK(file >= 0, "cannot create {}: {}", path, std::strerror(errno));
    stream.log_path = path;
    if (teed && in_filter) {
      int fds[2];
      LT_CHECK(pipe2(fds, O_CLOEXEC) == 0, "pipe2: {}", std::strerror(errno));
      fcntl(fds[0], F_SETFL, O_NONBLOCK);
      stream.open(fds[0], file, console_fd, fmt::format("[{}{}]:", o.role, local_rank));
      child.fd = fds[1];
    } else {
      child.fd = file;
    }
  } else if (!in_filter) {
    child.fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  }
  return child;
}

pid_t spawn(const std::vector<std::string>& command, const std::vector<std::string>& env, ChildFd out,
            ChildFd err) {
  std::vector<char*> argv, envp;
  for (const std::string& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  // Formatted before fork(): the store's threads may hold the allocator's lock in the child.
  const std::string exec_error = fmt::format("longtune-run: cannot execute '{}': ", argv[0]);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  LT_CHECK(pid >= 0, "fork: {}", std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);
    // If the launcher dies without stopping us (SIGKILL, OOM killer), the worker still gets SIGTERM.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(128 + SIGTERM);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD, SIGUSR1, SIGUSR2}) signal(sig, SIG_DFL);
    if (out.fd >= 0) dup2(out.fd, STDOUT_FILENO);
    if (err.fd >= 0) dup2(err.fd, STDERR_FILENO);
    // The store's listening and client sockets must not outlive this launcher in a worker: a
    // restarted launcher could not bind the port while a (stopped) worker still held it.
    close_range(3, ~0U, 0);
    execvpe(argv[0], argv.data(), envp.data());
    const char* reason = std::strerror(errno);
    write_all(STDERR_FILENO, exec_error.data(), exec_error.size());
    write_all(STDERR_FILENO, reason, std::strlen(reason));
    write_all(STDERR_FILENO, "\n", 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also in the parent, so a signal sent right away cannot miss the group
  if (out.fd >= 0) close(out.fd);
  if (err.fd >= 0) close(err.fd);
  return pid;
}

void signal_worker(const Worker& w, int sig) {
  if (killpg(w.pid, sig) != 0) kill(w.pid, sig);
}

// Reaps finished workers without blocking; returns those that failed, in reaping order.
std::vector<Worker*> reap(std::vector<Worker>& workers) {
  std::vector<Worker*> failed;
  for (Worker& w : workers) {
    if (!w.alive) continue;
    int status = 0;
    if (waitpid(w.pid, &status, WNOHANG) != w.pid) continue;
    w.alive = false;
    w.status = status;
    w.ended = now_s();
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) failed.push_back(&w);
  }
  return failed;
}

bool any_alive(const std::vector<Worker>& workers) {
  return std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.alive; });
}

// Waits up to timeout_s for output, signals or exits; pumps output; returns handled signals.
std::vector<int> wait_events(std::vector<Worker>& workers, SignalPipe& signals, double timeout_s) {
  std::vector<pollfd> fds{{signals.fd(), POLLIN, 0}};
  for (Worker& w : workers) {
    for (OutputStream* s : {&w.out, &w.err}) {
      if (s->is_open()) fds.push_back({s->fd(), POLLIN, 0});
    }
  }
  poll(fds.data(), fds.size(), static_cast<int>(timeout_s * 1000 + 0.5));
  for (Worker& w : workers) {
    w.out.pump();
    w.err.pump();
  }
  return signals.drain();
}

// SIGTERM (or `sig`) to every live worker, SIGKILL to those still alive after the grace period or
// after a second handled signal; then collects the rest of their output.
void stop_all(std::vector<Worker>& workers, SignalPipe& signals, int sig, const LaunchOptions& o) {
  for (const Worker& w : workers) {
    if (!w.alive) continue;
    log_launcher(fmt::format("sending process {} (local_rank {}) closing signal {}", w.pid, w.local_rank,
                             sigabbrev_np(sig) ? std::string("SIG") + sigabbrev_np(sig) : std::to_string(sig)));
    signal_worker(w, sig);
    // A stopped worker (SIGSTOP, a debugger) holds the signal pending until it runs again.
    if (sig != SIGKILL) signal_worker(w, SIGCONT);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.stop_grace_s);
  bool escalate = false;
  while (any_alive(workers) && !escalate) {
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    escalate = !wait_events(workers, signals, std::min(left, std::max(o.monitor_interval_s, 0.01))).empty();
    reap(workers);
  }
  for (Worker& w : workers) {
    if (!w.alive) continue;
    log_launcher(fmt::format("process {} (local_rank {}) still running; sending SIGKILL", w.pid, w.local_rank));
    signal_worker(w, SIGKILL);
    waitpid(w.pid, &w.status, 0);
    w.alive = false;
    w.ended = now_s();
  }
}

enum class AttemptEnd { kSucceeded, kFailed, kInterrupted };

AttemptEnd run_attempt(const LaunchOptions& o, int restart_count, const fs::path& run_dir,
                       SignalPipe& signals, Rendezvous& rendezvous, GroupResult& result) {
  result.remote_failure.clear();
  const fs::path attempt_dir = run_dir / fmt::format("attempt_{}", restart_count);
  remove_tree(attempt_dir);  // a rerun with the same --log-dir and run folder name starts clean
  fs::create_directories(attempt_dir);
  std::vector<Worker> workers(o.nproc_per_node);
  try {
    for (int lr = 0; lr < o.nproc_per_node; ++lr) {
      Worker& w = workers[lr];
      w.local_rank = lr;
      w.rank = o.node_rank * o.nproc_per_node + lr;
      const fs::path rank_dir = attempt_dir / std::to_string(lr);
      fs::create_directories(rank_dir);
      w.error_file = (rank_dir / "error.json").string();
      const ChildFd out = setup_stream(o, lr, 1, rank_dir, STDOUT_FILENO, w.out);
      const ChildFd err = setup_stream(o, lr, 2, rank_dir, STDERR_FILENO, w.err);
      w.pid = spawn(o.command, worker_environment(o, lr, restart_count, w.error_file), out, err);
      w.alive = true;
    }
  } catch (...) {  // no worker outlives a launcher that could not start them all
    stop_all(workers, signals, SIGTERM, o);
    throw;
  }

  AttemptEnd end = AttemptEnd::kSucceeded;
  std::vector<Worker*> failed;
  bool reported_done = false;
  while (true) {
    const std::vector<int> got = wait_events(workers, signals, std::max(o.monitor_interval_s, 0.001));
    failed = reap(workers);
    if (!got.empty()) {
      log_launcher(fmt::format("received signal {}, stopping workers", got.front()));
      result.launcher_signal = got.front();
      rendezvous.close(fmt::format("node {} received signal {}", o.node_rank, got.front()));
      stop_all(workers, signals, got.front(), o);
      end = AttemptEnd::kInterrupted;
      break;
    }
    if (!failed.empty()) {
      for (const Worker* w : failed) {
        const std::string how = WIFSIGNALED(w->status) ? fmt::format("signal {}", WTERMSIG(w->status))
                                                       : fmt::format("exitcode {}", WEXITSTATUS(w->status));
        log_launcher(fmt::format("failed ({}) local_rank: {} (pid: {}) of binary: {}", how, w->local_rank,
                                 w->pid, o.command.front()));
      }
      result.failures.clear();
      for (const Worker* w : failed) {
        WorkerFailure f;
        f.rank = w->rank;
        f.local_rank = w->local_rank;
        f.pid = w->pid;
        f.exit_code = WIFEXITED(w->status) ? WEXITSTATUS(w->status) : 0;
        f.signal = WIFSIGNALED(w->status) ? WTERMSIG(w->status) : 0;
        f.time = w->ended;
        f.stderr_log = w->err.log_path;
        if (fs::exists(w->error_file)) f.error_file = w->error_file;
        result.failures.push_back(f);
      }
      const WorkerFailure& first = result.failures.front();
      rendezvous.fail_round(fmt::format("node {}: worker rank {} (local_rank {}, pid {}) failed ({})", o.node_rank,
                                        first.rank, first.local_rank, first.pid,
                                        first.signal != 0 ? fmt::format("signal {}", first.signal)
                                                          : fmt::format("exitcode {}", first.exit_code)));
      stop_all(workers, signals, SIGTERM, o);
      end = AttemptEnd::kFailed;
      break;
    }
    if (!any_alive(workers) && !reported_done) {  // then wait for the other nodes (torchrun's exit barrier)
      rendezvous.mark_done();
      reported_done = true;
    }
    const Rendezvous::RoundState state = rendezvous.poll_round();
    if (state == Rendezvous::RoundState::kSucceeded) break;
    if (state == Rendezvous::RoundState::kFailed || state == Rendezvous::RoundState::kClosed) {
      log_launcher(fmt::format("round {} {}: {}; stopping the local workers", restart_count,
                               state == Rendezvous::RoundState::kClosed ? "ended" : "failed", rendezvous.failure()));
      result.failures.clear();
      result.remote_failure = rendezvous.failure();
      stop_all(workers, signals, SIGTERM, o);
      // A peer's signal closes the rendezvous: this node ends as if it had received SIGTERM itself.
      if (state == Rendezvous::RoundState::kClosed) result.launcher_signal = SIGTERM;
      end = state == Rendezvous::RoundState::kClosed ? AttemptEnd::kInterrupted : AttemptEnd::kFailed;
      break;
    }
  }
  result.wait_statuses.clear();
  for (Worker& w : workers) {
    w.out.finish();
    w.err.finish();
    result.wait_statuses.push_back(w.status);
  }
  return end;
}

int free_port() {
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  LT_CHECK(sock >= 0, "socket: {}", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  close(sock);
  LT_CHECK(ok, "cannot find a free port: {}", std::strerror(errno));
  return ntohs(addr.sin_port);
}

std::string uuid4() {
  unsigned char b[16] = {};
  const int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  LT_CHECK(fd >= 0 && read(fd, b, sizeof(b)) == static_cast<ssize_t>(sizeof(b)), "cannot read /dev/urandom");
  close(fd);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string s;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += fmt::format("{:02x}", b[i]);
  }
  return s;
}

std::string make_temp_dir(const fs::path& parent, const std::string& prefix) {
  fs::create_directories(parent);
  std::string tmpl = (parent / (prefix + "XXXXXX")).string();
  LT_CHECK(mkdtemp(tmpl.data()) != nullptr, "cannot create a folder under {}: {}", parent.string(),
           std::strerror(errno));
  return tmpl;
}

RendezvousOptions rendezvous_options(const LaunchOptions& o) {
  RendezvousOptions r;
  r.host = o.master_addr;
  r.port = o.master_port;
  r.nnodes = o.nnodes;
  r.node_rank = o.node_rank;
  r.run_id = o.run_id;
  r.join_timeout_s = o.rdzv_timeout_s;
  r.keep_alive_interval_s = o.keep_alive_interval_s;
  r.keep_alive_max_attempt = o.keep_alive_max_attempt;
  return r;
}

// Joins the next round and waits, handling signals, until every node has joined it. nullopt: a
// handled signal arrived first (result.launcher_signal says which).
std::optional<int> wait_for_round(const LaunchOptions& o, Rendezvous& rendezvous, int min_round, SignalPipe& signals,
                                  GroupResult& result) {
  rendezvous.join(min_round);
  std::vector<Worker> none;
  while (true) {
    if (const std::optional<int> round = rendezvous.poll_join()) {
      if (o.nnodes > 1) {
        log_launcher(fmt::format("round {}: all {} nodes joined; starting {} worker(s) on node {}", *round,
                                 o.nnodes, o.nproc_per_node, o.node_rank));
      }
      return round;
    }
    if (const std::vector<int> got = wait_events(none, signals, std::clamp(o.monitor_interval_s, 0.01, 0.2));
        !got.empty()) {
      log_launcher(fmt::format("received signal {} while waiting for the other nodes", got.front()));
      result.launcher_signal = got.front();
      return std::nullopt;
    }
  }
}

}  // namespace

std::vector<std::string> worker_environment(const LaunchOptions& o, int local_rank, int restart_count,
                                            const std::string& error_file) {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  const int world = o.nnodes * o.nproc_per_node;
  const int rank = o.node_rank * o.nproc_per_node + local_rank;
  env["LOCAL_RANK"] = std::to_string(local_rank);
  env["RANK"] = std::to_string(rank);
  env["GROUP_RANK"] = std::to_string(o.node_rank);
  env["ROLE_RANK"] = std::to_string(rank);
  env["ROLE_NAME"] = o.role;
  env["LOCAL_WORLD_SIZE"] = std::to_string(o.nproc_per_node);
  env["WORLD_SIZE"] = std::to_string(world);
  env["GROUP_WORLD_SIZE"] = std::to_string(o.nnodes);
  env["ROLE_WORLD_SIZE"] = std::to_string(world);
  env["MASTER_ADDR"] = o.master_addr;
  env["MASTER_PORT"] = std::to_string(o.master_port);
  env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(restart_count);
  env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(o.max_restarts);
  env["TORCHELASTIC_RUN_ID"] = o.run_id;
  // As torchrun: node 0's launcher hosts the TCPStore at MASTER_ADDR:MASTER_PORT (rendezvous.h), so
  // no worker hosts it and a restarted worker group never meets a dying worker's store.
  env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
  env["TORCHELASTIC_ERROR_FILE"] = error_file;
  env["TORCHELASTIC_SIGNALS_TO_HANDLE"] = o.signals_to_handle_text;
  env.try_emplace("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1");
  if (o.nproc_per_node > 1) env.try_emplace("OMP_NUM_THREADS", "1");
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

GroupResult run_worker_group(const LaunchOptions& options) {
  LaunchOptions o = options;
  if (o.standalone) {
    o.master_addr = "localhost";
    o.master_port = free_port();
    o.run_id = uuid4();
  }
  if (o.nproc_per_node > 1 && std::getenv("OMP_NUM_THREADS") == nullptr) {
    log_launcher("setting OMP_NUM_THREADS=1 for each worker (as torchrun does); tune it as needed");
  }
  signal(SIGPIPE, SIG_IGN);
  GroupResult result;
  const char* tmp = std::getenv("TMPDIR");
  const fs::path base = o.log_dir.empty()
                            ? fs::path(make_temp_dir(tmp != nullptr ? tmp : "/tmp", "longtune-run_"))
                            : fs::path(o.log_dir);
  result.run_log_dir = make_temp_dir(base, o.run_id + "_");
  Rendezvous rendezvous(rendezvous_options(o));
  SignalPipe signals(o.signals_to_handle);
  for (int min_round = 0;;) {
    const std::optional<int> round = wait_for_round(o, rendezvous, min_round, signals, result);
    if (!round) {  // a signal while waiting for the other nodes
      rendezvous.close(fmt::format("node {} received signal {}", o.node_rank, result.launcher_signal));
      rendezvous.leave();
      result.outcome = GroupResult::Outcome::kInterrupted;
      return result;
    }
    result.restarts = *round;
    const AttemptEnd end = run_attempt(o, *round, result.run_log_dir, signals, rendezvous, result);
    if (end != AttemptEnd::kFailed || *round >= o.max_restarts) {
      rendezvous.leave();
      result.outcome = end == AttemptEnd::kSucceeded   ? GroupResult::Outcome::kSucceeded
                       : end == AttemptEnd::kFailed    ? GroupResult::Outcome::kFailed
                                                       : GroupResult::Outcome::kInterrupted;
      return result;
    }
    log_launcher(fmt::format("worker group failed in round {}; restarting it in the next round ({} of {} restarts)",
                             *round, *round + 1, o.max_restarts));
    min_round = *round + 1;
  }
}

std::string failure_summary(const LaunchOptions& o, const GroupResult& result) {
  char host[256] = "unknown";
  gethostname(host, sizeof(host) - 1);
  const std::string rule(60, '=');
  std::string s = fmt::format("{}\n{} FAILED (after {} restart(s))\n{}\n", rule, o.command.front(),
                              result.restarts, std::string(60, '-'));
  for (size_t i = 0; i < result.failures.size(); ++i) {
    const WorkerFailure& f = result.failures[i];
    const std::time_t t = static_cast<std::time_t>(f.time);
    char when[64];
    std::strftime(when, sizeof(when), "%Y-%m-%d_%H:%M:%S", std::localtime(&t));
    s += i == 0 ? "Root Cause (first observed failure):\n" : "Also failed (same check):\n";
    s += fmt::format("[{}]:\n  time      : {}\n  host      : {}\n  rank      : {} (local_rank: {})\n", i, when,
                     host, f.rank, f.local_rank);
    if (f.signal != 0) {
      const char* abbrev = sigabbrev_np(f.signal);
      s += fmt::format("  exitcode  : -{} (pid: {})\n  signal    : {} (SIG{})\n", f.signal, f.pid, f.signal,
                       abbrev != nullptr ? abbrev : "?");
    } else {
      s += fmt::format("  exitcode  : {} (pid: {})\n", f.exit_code, f.pid);
    }
    s += fmt::format("  error_file: {}\n  log_file  : {}\n", f.error_file.empty() ? "<N/A>" : f.error_file,
                     f.stderr_log.empty() ? "<N/A> (use --redirects 2 or --tee 2 to keep one)" : f.stderr_log);
  }
  if (result.failures.empty() && !result.remote_failure.empty()) {
    s += fmt::format("Root Cause (reported through the rendezvous):\n  {}\n", result.remote_failure);
  }
  s += fmt::format("The other local workers were stopped. Logs: {}\n{}\n", result.run_log_dir, rule);
  return s;
}

}  // namespace longtune::launch
