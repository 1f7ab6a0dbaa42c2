// Restart rounds agreed by the launchers of every node, through a c10d TCPStore that node 0's
// launcher hosts (torchrun's agent store: the workers use it too, under a per-round key prefix).
// A round closes when every node has joined it; any failure (a worker, a missing keep-alive, a node
// joining a running round, a lost store) fails the round for every node, and all join the next one.
// Static membership only: node ranks come from --node-rank, no elastic MIN:MAX, no waiting list.
// Not here: starting or stopping workers (worker_group), and exit codes (main).
#pragma once

#include "common/check.h"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace longtune::launch {

// A rendezvous that cannot go on: it timed out, another node closed it, or the store cannot be hosted.
// The message starts with torchrun's name for the case (RendezvousTimeoutError, ...).
class RendezvousError : public Error {
 public:
  using Error::Error;
};

struct RendezvousOptions {
  std::string host = "127.0.0.1";    // where node 0's launcher hosts the store (MASTER_ADDR)
  int port = 29500;                  // the store's port (MASTER_PORT)
  int nnodes = 1;
  int node_rank = 0;                 // node 0 hosts the store
  std::string run_id = "none";       // key prefix: two jobs on one store never mix
  double join_timeout_s = 600;       // --rdzv-timeout: a round must close within this
  double keep_alive_interval_s = 5;  // a running node's keep-alive period
  int keep_alive_max_attempt = 3;    // missed keep-alives before a peer counts as dead
};

class Rendezvous {
 public:
  // Node 0 binds the store now (throws RendezvousError if the port is taken); other nodes connect
  // lazily while joining, so they may start before node 0.
  explicit Rendezvous(RendezvousOptions options);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // Starts joining the first round >= min_round that has not started; the deadline is now + join_timeout_s.
  void join(int min_round);
  // Non-blocking step of join(): the round number once every node has joined it, else nullopt.
  // Throws RendezvousError on the deadline (naming the nodes that never joined) or if a node closed
  // the rendezvous.
  std::optional<int> poll_join();

  enum class RoundState {
    kRunning,    // nothing known to be wrong
    kFailed,     // the round failed somewhere (failure() says where); join the next one
    kClosed,     // a node closed the rendezvous (a signal): stop, no next round
    kSucceeded,  // every node reported mark_done()
  };
  // Non-blocking check of the running round; also sends this node's keep-alive and watches the peers'
  // (a peer silent for keep_alive_interval_s * keep_alive_max_attempt fails the round).
  RoundState poll_round();
  // Why the round failed or the rendezvous closed (the first reason any node gave).
  const std::string& failure() const { return failure_; }

  // Fails the running round for every node; the first reason given is the one everybody reports.
  void fail_round(const std::string& reason);
  // Every local worker exited 0; the round succeeds when every node said so.
  void mark_done();
  // No further rounds for anyone (this node got a signal): the others stop their workers and exit.
  void close(const std::string& reason);
  // Before this launcher exits: node 0 keeps the store up until every node has left (or is silent).
  void leave();

  int round() const { return round_; }
  bool hosts_store() const { return options_.node_rank == 0; }

 private:
  struct Connection;  // the c10d store (kept out of this header: no LibTorch includes for callers)
  using Clock = std::chrono::steady_clock;

  bool connect(double timeout_s);
  bool enter_round();
  int current_round();
  std::string read(const std::string& key);
  std::string key_of(int round, const std::string& name) const;
  std::string missing_nodes(int round);
  bool peers_alive();

  RendezvousOptions options_;
  std::unique_ptr<Connection> store_;  // null while a client is not connected
  bool entering_ = false;            // join(): still has to pick a round and register in it
  int min_round_ = 0;
  int round_ = -1;                   // the round joined (waiting or running)
  Clock::time_point deadline_;
  std::string failure_;
  bool done_ = false;
  Clock::time_point last_beat_;
  std::map<int, std::pair<int64_t, Clock::time_point>> peer_beats_;  // node -> (last count, when it changed)
};

}  // namespace longtune::launch
