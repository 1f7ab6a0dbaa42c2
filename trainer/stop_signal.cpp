#include "trainer/stop_signal.h"

#include <csignal>

namespace longtune::trainer {
namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int signal_number) {
  g_stop_signal = signal_number;
  // The next signal of this kind gets the default action.
  std::signal(signal_number, SIG_DFL);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

int stop_requested() { return g_stop_signal; }

}  // namespace longtune::trainer
