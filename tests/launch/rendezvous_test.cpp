// launch/rendezvous.cpp: several nodes' launchers in one process over a real TCPStore on loopback.
// A round closes only when every node has joined; a failure, a restarted node, a silent node or a
// lost store fail the round for everyone; the round count survives a restart of node 0's store; a
// node that never comes is a named timeout; close() ends everyone's rendezvous.
#include "launch/rendezvous.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>
#include <vector>

namespace longtune::launch {
namespace {

using State = Rendezvous::RoundState;

int free_port() {
  const int sock = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len);
  close(sock);
  return ntohs(addr.sin_port);
}

RendezvousOptions node(int port, int rank, int nnodes = 2) {
  RendezvousOptions o;
  o.port = port;
  o.node_rank = rank;
  o.nnodes = nnodes;
  o.run_id = "test";
  o.join_timeout_s = 20;
  o.keep_alive_interval_s = 0.05;
  o.keep_alive_max_attempt = 4;
  return o;
}

// Polls every node's join until all have a round (or 20 s); returns each node's round.
std::vector<int> join_all(const std::vector<Rendezvous*>& nodes, const std::vector<int>& min_rounds) {
  for (size_t i = 0; i < nodes.size(); ++i) nodes[i]->join(min_rounds[i]);
  std::vector<std::optional<int>> got(nodes.size());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < until) {
    bool all = true;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!got[i]) got[i] = nodes[i]->poll_join();
      all = all && got[i].has_value();
    }
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::vector<int> rounds;
  for (const auto& g : got) rounds.push_back(g.value_or(-1));
  return rounds;
}

// Polls `r` until it leaves kRunning (or 10 s).
State poll_until_not_running(Rendezvous& r, Rendezvous* keep_alive_too = nullptr) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  State s = State::kRunning;
  while (s == State::kRunning && std::chrono::steady_clock::now() < until) {
    s = r.poll_round();
    if (keep_alive_too != nullptr) keep_alive_too->poll_round();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return s;
}

TEST(Rendezvous, RoundClosesOnlyWhenEveryNodeJoinedAndAFailureMovesEveryoneOn) {
  const int port = free_port();
  Rendezvous n1(node(port, 1));  // may start before node 0: it connects while joining
  n1.join(0);
  EXPECT_FALSE(n1.poll_join().has_value());
  Rendezvous n0(node(port, 0));
  n0.join(0);
  EXPECT_FALSE(n0.poll_join().has_value());  // node 0 alone: the round stays open
  EXPECT_EQ(join_all({&n0, &n1}, {0, 0}), (std::vector<int>{0, 0}));
  EXPECT_EQ(n0.poll_round(), State::kRunning);
  n1.fail_round("node 1: worker rank 3 failed (exitcode 1)");
  n1.fail_round("a later reason");  // the first reason is the one every node reports
  EXPECT_EQ(poll_until_not_running(n0), State::kFailed);
  EXPECT_EQ(n0.failure(), "node 1: worker rank 3 failed (exitcode 1)");
  EXPECT_EQ(join_all({&n0, &n1}, {1, 1}), (std::vector<int>{1, 1}));
  n0.mark_done();
  EXPECT_EQ(n0.poll_round(), State::kRunning);  // node 1 has not finished yet
  n1.mark_done();
  EXPECT_EQ(poll_until_not_running(n0), State::kSucceeded);
  EXPECT_EQ(poll_until_not_running(n1), State::kSucceeded);
}

TEST(Rendezvous, ARestartedLauncherFailsTheRunningRoundAndEveryoneJoinsTheNext) {
  const int port = free_port();
  Rendezvous n0(node(port, 0));
  auto n1 = std::make_unique<Rendezvous>(node(port, 1));
  EXPECT_EQ(join_all({&n0, n1.get()}, {0, 0}), (std::vector<int>{0, 0}));
  n1.reset();  // SIGKILL of node 1's launcher, started again with the same command
  Rendezvous again(node(port, 1));
  again.join(0);
  EXPECT_FALSE(again.poll_join().has_value());
  EXPECT_EQ(poll_until_not_running(n0), State::kFailed);
  EXPECT_NE(n0.failure().find("node 1 (re)joined while round 0 was running"), std::string::npos) << n0.failure();
  EXPECT_EQ(join_all({&n0, &again}, {1, 0}), (std::vector<int>{1, 1}));
}

TEST(Rendezvous, ASilentNodeFailsTheRound) {
  const int port = free_port();
  Rendezvous n0(node(port, 0)), n1(node(port, 1));
  EXPECT_EQ(join_all({&n0, &n1}, {0, 0}), (std::vector<int>{0, 0}));
  // Node 1 polls for a while (its keep-alives arrive), then stops as a SIGSTOPped launcher would.
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(n0.poll_round(), State::kRunning);
    n1.poll_round();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(poll_until_not_running(n0), State::kFailed);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 2.0);
  EXPECT_NE(n0.failure().find("node 1 sent no keep-alive"), std::string::npos) << n0.failure();
  EXPECT_EQ(n1.poll_round(), State::kFailed);  // when it runs again it learns the round is over
}

TEST(Rendezvous, ANodeThatNeverComesIsANamedTimeout) {
  RendezvousOptions o = node(free_port(), 0, /*nnodes=*/3);
  o.join_timeout_s = 0.3;
  Rendezvous n0(o);
  RendezvousOptions o2 = o;
  o2.node_rank = 2;
  Rendezvous n2(o2);
  n0.join(0);
  n2.join(0);
  try {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < until) {
      EXPECT_FALSE(n0.poll_join().has_value());
      n2.poll_join();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "no timeout";
  } catch (const RendezvousError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("RendezvousTimeoutError"), std::string::npos) << what;
    EXPECT_NE(what.find("node(s) 1 of 3 never joined"), std::string::npos) << what;
  }
}

TEST(Rendezvous, CloseEndsTheRendezvousForEveryNode) {
  const int port = free_port();
  Rendezvous n0(node(port, 0)), n1(node(port, 1));
  EXPECT_EQ(join_all({&n0, &n1}, {0, 0}), (std::vector<int>{0, 0}));
  n0.close("node 0 received signal 15");
  EXPECT_EQ(poll_until_not_running(n1), State::kClosed);
  EXPECT_NE(n1.failure().find("signal 15"), std::string::npos);
  n1.join(1);
  EXPECT_THROW(n1.poll_join(), RendezvousError);
}

TEST(Rendezvous, ARestartOfNodeZerosStoreKeepsTheRoundCount) {
  const int port = free_port();
  auto n0 = std::make_unique<Rendezvous>(node(port, 0));
  Rendezvous n1(node(port, 1));
  EXPECT_EQ(join_all({n0.get(), &n1}, {0, 0}), (std::vector<int>{0, 0}));
  n1.fail_round("first failure");
  EXPECT_EQ(join_all({n0.get(), &n1}, {1, 1}), (std::vector<int>{1, 1}));
  n0.reset();  // node 0's launcher dies: its store with it
  EXPECT_EQ(poll_until_not_running(n1), State::kFailed);
  EXPECT_NE(n1.failure().find("RendezvousConnectionError"), std::string::npos) << n1.failure();
  Rendezvous restarted(node(port, 0));  // a fresh store; node 1 carries round 2 into it
  EXPECT_EQ(join_all({&restarted, &n1}, {0, 2}), (std::vector<int>{2, 2}));
}

TEST(Rendezvous, NodeZeroCannotHostOnAPortInUse) {
  const int port = free_port();
  Rendezvous n0(node(port, 0));
  EXPECT_THROW(Rendezvous(node(port, 0)), RendezvousError);
}

}  // namespace
}  // namespace longtune::launch
