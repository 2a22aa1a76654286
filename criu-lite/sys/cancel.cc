#include "sys/cancel.h"

#include <signal.h>

#include <atomic>

#include "sys/error.h"

namespace ckpt::cancel {
namespace {
std::atomic<int> g_sig{0};
void on_signal(int sig) {
  g_sig.store(sig);
}
}  // namespace

void install_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaction(s, &sa, nullptr);
}

bool requested() {
  return g_sig.load() != 0;
}

void check() {
  int s = g_sig.load();
  if (s) throw Error(strfmt("interrupted by signal %d", s));
}

}  // namespace ckpt::cancel
