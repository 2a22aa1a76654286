// The container verbs: run, ps, kill, rm (the launcher is container/run.h).
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cli/commands.h"
#include "cli/options.h"
#include "container/run.h"
#include "container/state.h"
#include "sys/error.h"

namespace ckpt::cli {

namespace {

// "512M", "1G", "1048576": bytes (K, M, G, T are powers of 1024).
uint64_t parse_bytes(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(s.c_str(), &end, 10);
  if (errno || end == s.c_str() || s[0] == '-') throw UsageError("--memory: bad size '" + s + "'");
  std::string unit = end;
  int shift = 0;
  if (unit == "" || unit == "B" || unit == "b")
    shift = 0;
  else if (unit == "K" || unit == "k" || unit == "KiB")
    shift = 10;
  else if (unit == "M" || unit == "m" || unit == "MiB")
    shift = 20;
  else if (unit == "G" || unit == "g" || unit == "GiB")
    shift = 30;
  else if (unit == "T" || unit == "t" || unit == "TiB")
    shift = 40;
  else
    throw UsageError("--memory: bad unit in '" + s + "' (K, M, G, T)");
  if (shift && v > (~0ULL >> shift)) throw UsageError("--memory: too large: " + s);
  return static_cast<uint64_t>(v) << shift;
}

int parse_signal(const std::string& s) {
  if (!s.empty() && std::all_of(s.begin(), s.end(), ::isdigit)) {
    int n = atoi(s.c_str());
    if (n >= 1 && n < NSIG) return n;
  }
  std::string name = s;
  for (auto& c : name) c = static_cast<char>(toupper(c));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int i = 1; i < NSIG; i++) {
    const char* abbrev = sigabbrev_np(i);
    if (abbrev && name == abbrev) return i;
  }
  throw UsageError("--signal: unknown signal '" + s + "'");
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

}  // namespace

int cmd_run(const Args& args) {
  Common common;
  container::RunRequest req;
  std::string memory;
  // Everything after "--" is the command, options included.
  auto dashdash = std::find(args.begin(), args.end(), "--");
  Args opts(args.begin(), dashdash);
  if (dashdash != args.end()) req.argv.assign(dashdash + 1, args.end());

  po::options_description desc("run");
  desc.add_options()("name", po::value<std::string>(&req.name)->required(), "container name")(
      "rootfs", po::value<std::string>(&req.rootfs), "root directory")(
      "hostname", po::value<std::string>(&req.hostname), "host name")(
      "net", po::value<std::string>(&req.net)->default_value("none"), "network")(
      "memory", po::value<std::string>(&memory), "memory limit")(
      "detach,d", po::bool_switch(&req.detach), "run in the background")(
      "log", po::value<std::string>(&req.log_file), "stdio of a detached container")(
      "rm", po::bool_switch(&req.remove_on_exit), "remove once CMD exits")(
      "command", po::value<std::vector<std::string>>(), "CMD ARGS...");
  add_common(desc, common);
  po::positional_options_description pos;
  pos.add("command", -1);
  po::variables_map vm;
  if (!parse(opts, desc, &pos, vm, "run")) return 0;
  apply_common(common);
  if (vm.count("command")) {
    if (!req.argv.empty()) throw UsageError("the command goes after '--' (see 'ckpt help run')");
    req.argv = vm["command"].as<std::vector<std::string>>();
  }
  if (!memory.empty()) req.memory = parse_bytes(memory);
  if (req.detach && req.remove_on_exit) throw UsageError("--rm is for the foreground (no -d)");
  if (!req.log_file.empty() && !req.detach) throw UsageError("--log goes with -d");
  container::check_name(req.name);

  req.on_started = [&](const img::ContainerState& s) {
    if (req.detach) {
      printf("%s %d\n", s.name().c_str(), s.init_pid());
      fflush(stdout);
    }
  };
  int status = container::run_container(req);
  if (req.detach) return 0;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

int cmd_ps(const Args& args) {
  Common common;
  bool all = true;
  po::options_description desc("ps");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "ps")) return 0;
  apply_common(common);
  (void)all;
  printf("%-20s %8s %-8s %-19s %s\n", "NAME", "PID", "STATUS", "CREATED", "COMMAND");
  for (const auto& s : container::list_states()) {
    char created[32] = "?";
    time_t t = static_cast<time_t>(s.created());
    struct tm tm;
    if (localtime_r(&t, &tm)) strftime(created, sizeof created, "%Y-%m-%d %H:%M:%S", &tm);
    printf("%-20s %8d %-8s %-19s %s\n", s.name().c_str(), s.init_pid(),
           container::status_name(container::live_status(s)), created, join(s.argv()).c_str());
  }
  return 0;
}

int cmd_kill(const Args& args) {
  Common common;
  std::string name, sig = "KILL";
  po::options_description desc("kill");
  desc.add_options()("name", po::value<std::string>(&name)->required(), "container")(
      "signal,s", po::value<std::string>(&sig), "signal");
  add_common(desc, common);
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!parse(args, desc, &pos, vm, "kill")) return 0;
  apply_common(common);
  container::kill_container(name, parse_signal(sig));
  return 0;
}

int cmd_rm(const Args& args) {
  Common common;
  std::vector<std::string> names;
  bool force = false;
  po::options_description desc("rm");
  desc.add_options()("name", po::value<std::vector<std::string>>(&names)->required(), "containers")(
      "force,f", po::bool_switch(&force), "kill if running");
  add_common(desc, common);
  po::positional_options_description pos;
  pos.add("name", -1);
  po::variables_map vm;
  if (!parse(args, desc, &pos, vm, "rm")) return 0;
  apply_common(common);
  for (const auto& n : names) container::check_name(n);
  // Each name is tried; the first error is reported after the others ran.
  std::optional<Error> first;
  for (const auto& n : names) {
    try {
      container::remove_container(n, force);
    } catch (const Error& e) {
      if (!first) first = e;
      if (names.size() > 1) fprintf(stderr, "ckpt: %s\n", e.what());
    }
  }
  if (first) throw *first;
  return 0;
}

}  // namespace ckpt::cli
