// The launchers' round protocol (see rendezvous.h) over c10d's TCPStore. Keys, under
// "longtune-run/<run id>/":
//   round                 the current round (decimal); a failed round moves it on by compare-and-set
//   round_R/member_N      joins of node N into round R (the first counts; a restarted node's second does not)
//   round_R/joined        distinct nodes in round R; the node that brings it to nnodes sets round_R/closed
//   round_R/failed        the first failure reason; round_R/done counts nodes whose workers all succeeded
//   keep_alive_N          node N's keep-alive counter; shutdown: why a node closed the rendezvous;
//   left_N                node N's launcher is exiting
// A node that finds its round closed before it registered (it restarted while the others ran) fails
// that round, so a restarted launcher brings every node into the next round.
#include "launch/rendezvous.h"

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <thread>

namespace longtune::launch {

struct Rendezvous::Connection {
  c10::intrusive_ptr<c10d::Store> store;
};

namespace {

// A client's store call failed: the host is gone (node 0's launcher died or restarted) or unreachable.
class StoreLost : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::chrono::milliseconds millis(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

Rendezvous::Rendezvous(RendezvousOptions options) : options_(std::move(options)) {
  if (!hosts_store()) return;
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(options_.port);
  o.isServer = true;
  o.waitWorkers = false;
  o.timeout = millis(options_.keep_alive_interval_s * options_.keep_alive_max_attempt);
  try {
    store_ = std::make_unique<Connection>(Connection{c10::make_intrusive<c10d::TCPStore>(options_.host, o)});
  } catch (const std::exception& e) {
    throw RendezvousError(fmt::format("RendezvousConnectionError: node 0 cannot host the rendezvous store on port "
                                      "{} (is another job using it? pick --master-port): {}",
                                      options_.port, first_line(e.what())));
  }
}

Rendezvous::~Rendezvous() = default;

bool Rendezvous::connect(double timeout_s) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(options_.port);
  o.isServer = false;
  o.timeout = millis(std::max(timeout_s, 0.05));
  try {
    auto store = c10::make_intrusive<c10d::TCPStore>(options_.host, o);
    // After connecting, a call that gets no answer within the keep-alive window means the host stalled.
    store->setTimeout(millis(options_.keep_alive_interval_s * options_.keep_alive_max_attempt));
    store_ = std::make_unique<Connection>(Connection{store});
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

std::string Rendezvous::key_of(int round, const std::string& name) const {
  const std::string base = fmt::format("longtune-run/{}/", options_.run_id);
  return round < 0 ? base + name : fmt::format("{}round_{}/{}", base, round, name);
}

// Every store call goes through `call`, which turns a client's broken connection into StoreLost.
#define LT_STORE_CALL(expr)                                                             \
  [&]() {                                                                               \
    try {                                                                               \
      return (expr);                                                                    \
    } catch (const std::exception& e) {                                                 \
      if (hosts_store()) throw RendezvousError(std::string("rendezvous store: ") + e.what()); \
      throw StoreLost(first_line(e.what()));                                            \
    }                                                                                   \
  }()

std::string Rendezvous::read(const std::string& key) {
  c10d::Store& s = *store_->store;
  if (!LT_STORE_CALL(s.check({key}))) return "";
  return text(LT_STORE_CALL(s.get(key)));
}

int Rendezvous::current_round() {
  c10d::Store& s = *store_->store;
  // compareSet on a missing key with an empty expected value creates it: the first caller sets round 0.
  const std::string value = text(LT_STORE_CALL(s.compareSet(key_of(-1, "round"), {}, bytes("0"))));
  return std::stoi(value);
}

// Picks the round to join and registers this node in it; false if it must look again.
bool Rendezvous::enter_round() {
  c10d::Store& s = *store_->store;
  int r = current_round();
  if (r < min_round_) {  // a node that ran rounds before the store restarted carries the count on
    LT_STORE_CALL(s.compareSet(key_of(-1, "round"), bytes(std::to_string(r)), bytes(std::to_string(min_round_))));
    return false;
  }
  if (!read(key_of(r, "failed")).empty()) {
    LT_STORE_CALL(s.compareSet(key_of(-1, "round"), bytes(std::to_string(r)), bytes(std::to_string(r + 1))));
    return false;
  }
  if (!read(key_of(r, "closed")).empty()) {  // running without us: this launcher restarted
    round_ = r;
    fail_round(fmt::format("node {} (re)joined while round {} was running (its launcher restarted)",
                           options_.node_rank, r));
    return false;
  }
  round_ = r;
  if (LT_STORE_CALL(s.add(key_of(r, fmt::format("member_{}", options_.node_rank)), 1)) == 1) {
    if (LT_STORE_CALL(s.add(key_of(r, "joined"), 1)) == options_.nnodes) {
      LT_STORE_CALL((s.set(key_of(r, "closed"), bytes("1")), 0));
    }
  }
  return true;
}

void Rendezvous::join(int min_round) {
  min_round_ = min_round;
  entering_ = true;
  deadline_ = Clock::now() + millis(options_.join_timeout_s);
}

std::string Rendezvous::missing_nodes(int round) {
  std::string out;
  for (int n = 0; n < options_.nnodes; ++n) {
    if (store_ == nullptr || round < 0 || read(key_of(round, fmt::format("member_{}", n))).empty()) {
      out += (out.empty() ? "" : ", ") + std::to_string(n);
    }
  }
  return out;
}

std::optional<int> Rendezvous::poll_join() {
  const double left = std::chrono::duration<double>(deadline_ - Clock::now()).count();
  if (left <= 0) {
    std::string missing;
    try {
      missing = missing_nodes(entering_ ? -1 : round_);
    } catch (const StoreLost&) {
      missing = "unknown (the store is unreachable)";
    }
    throw RendezvousError(fmt::format(
        "RendezvousTimeoutError: round {} of run '{}' did not close within --rdzv-timeout {} s: node(s) {} of {} never "
        "joined (their launchers did not start, died, or cannot reach {}:{})",
        std::max(round_, min_round_), options_.run_id, options_.join_timeout_s, missing, options_.nnodes,
        options_.host, options_.port));
  }
  if (store_ == nullptr && !connect(std::min(left, 1.0))) return std::nullopt;
  try {
    c10d::Store& s = *store_->store;
    if (const std::string why = read(key_of(-1, "shutdown")); !why.empty()) {
      throw RendezvousError("RendezvousClosedError: the rendezvous was closed: " + why);
    }
    if (entering_) {
      if (!enter_round()) return std::nullopt;
      entering_ = false;
    }
    if (LT_STORE_CALL(s.check({key_of(round_, "closed")}))) {
      failure_.clear();
      done_ = false;
      peer_beats_.clear();
      last_beat_ = Clock::time_point{};
      return round_;
    }
    // The round we wait in was failed or overtaken (a node carried a higher count in): look again.
    if (current_round() != round_ || !read(key_of(round_, "failed")).empty()) entering_ = true;
  } catch (const StoreLost&) {
    store_.reset();
    entering_ = true;
  }
  return std::nullopt;
}

// Every peer's keep-alive counter must move within the window; a silent peer fails the round.
bool Rendezvous::peers_alive() {
  c10d::Store& s = *store_->store;
  const auto now = Clock::now();
  const double window = options_.keep_alive_interval_s * options_.keep_alive_max_attempt;
  for (int n = 0; n < options_.nnodes; ++n) {
    if (n == options_.node_rank) continue;
    const int64_t count = LT_STORE_CALL(s.add(key_of(-1, fmt::format("keep_alive_{}", n)), 0));
    auto [it, fresh] = peer_beats_.try_emplace(n, count, now);
    if (fresh || it->second.first != count) {
      it->second = {count, now};
    } else if (std::chrono::duration<double>(now - it->second.second).count() > window) {
      fail_round(fmt::format("node {} sent no keep-alive for {} s (its launcher died or is stalled)", n, window));
      return false;
    }
  }
  return true;
}

Rendezvous::RoundState Rendezvous::poll_round() {
  if (store_ == nullptr) return RoundState::kFailed;
  try {
    c10d::Store& s = *store_->store;
    if (const std::string why = read(key_of(-1, "shutdown")); !why.empty()) {
      failure_ = "the rendezvous was closed: " + why;
      return RoundState::kClosed;
    }
    if (const std::string why = read(key_of(round_, "failed")); !why.empty()) {
      failure_ = why;
      return RoundState::kFailed;
    }
    if (const int now_round = current_round(); now_round != round_) {
      failure_ = fmt::format("another node moved the rendezvous on to round {}", now_round);
      return RoundState::kFailed;
    }
    if (done_ && LT_STORE_CALL(s.add(key_of(round_, "done"), 0)) >= options_.nnodes) return RoundState::kSucceeded;
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - last_beat_).count() >= options_.keep_alive_interval_s) {
      last_beat_ = now;
      LT_STORE_CALL(s.add(key_of(-1, fmt::format("keep_alive_{}", options_.node_rank)), 1));
      if (!peers_alive()) return RoundState::kFailed;
    }
    return RoundState::kRunning;
  } catch (const StoreLost& e) {
    store_.reset();
    failure_ = fmt::format("RendezvousConnectionError: lost the rendezvous store at {}:{} (node 0's launcher died "
                           "or restarted): {}", options_.host, options_.port, e.what());
    return RoundState::kFailed;
  }
}

void Rendezvous::fail_round(const std::string& reason) {
  if (store_ == nullptr || round_ < 0) return;
  try {
    c10d::Store& s = *store_->store;
    const std::string first = text(LT_STORE_CALL(s.compareSet(key_of(round_, "failed"), {}, bytes(reason))));
    failure_ = first;
    LT_STORE_CALL(s.compareSet(key_of(-1, "round"), bytes(std::to_string(round_)), bytes(std::to_string(round_ + 1))));
  } catch (const StoreLost&) {
    store_.reset();
  }
}

void Rendezvous::mark_done() {
  if (done_ || store_ == nullptr) return;
  done_ = true;
  try {
    LT_STORE_CALL(store_->store->add(key_of(round_, "done"), 1));
  } catch (const StoreLost&) {
    store_.reset();
  }
}

void Rendezvous::close(const std::string& reason) {
  if (store_ == nullptr) return;
  try {
    LT_STORE_CALL(store_->store->compareSet(key_of(-1, "shutdown"), {}, bytes(reason)));
  } catch (const StoreLost&) {
    store_.reset();
  }
}

void Rendezvous::leave() {
  if (store_ == nullptr) return;
  try {
    c10d::Store& s = *store_->store;
    LT_STORE_CALL((s.set(key_of(-1, fmt::format("left_{}", options_.node_rank)), bytes("1")), 0));
    if (!hosts_store()) return;
    // The host's exit takes the store down; a node still reading it would take that for a failure.
    const auto until = Clock::now() + millis(options_.keep_alive_interval_s * options_.keep_alive_max_attempt);
    for (int n = 1; n < options_.nnodes && Clock::now() < until; ++n) {
      while (Clock::now() < until && !LT_STORE_CALL(s.check({key_of(-1, fmt::format("left_{}", n))}))) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  } catch (const StoreLost&) {
    store_.reset();
  }
}

}  // namespace longtune::launch
