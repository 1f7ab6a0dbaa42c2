// Ranks as threads of one test process, joined by a real Gloo process group on loopback: what the
// distributed tests of several folders share.
#pragma once

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "dist/dist_env.h"
#include "dist/process_group.h"

namespace longtune::dist {

// A TCP port free on loopback right now.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// Runs body(rank, group) on `world` threads, each a rank of one Gloo group; fails on any rank's error.
inline void run_ranks(int world, const std::function<void(int, ProcessGroup&)>& body,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30),
                      c10::Device device = c10::Device(c10::kCPU), Backend backend = Backend::kGloo,
                      WaitDiscipline wait = WaitDiscipline::kAuto) {
  const int port = free_port();
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank)
    threads.emplace_back([&, rank] {
      try {
        DistEnv env;
        env.rank = env.local_rank = rank;
        env.world_size = env.local_world_size = world;
        env.master_port = port;
        env.gloo_interface = "lo";
        auto group = ProcessGroup::create(env, device, backend, timeout, wait);
        body(rank, *group);
      } catch (const std::exception& e) {
        errors[rank] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < world; ++rank) EXPECT_EQ(errors[rank], "") << "rank " << rank;
}

}  // namespace longtune::dist
