// ckpt: checkpoint and restore of Linux process trees. This file only
// dispatches to a verb and turns errors into one line and an exit code:
// 0 success, 1 failure, 2 wrong usage.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <google/protobuf/stubs/common.h>

#include "cli/commands.h"
#include "sys/cancel.h"
#include "sys/error.h"

namespace {

struct Verb {
  const char* name;
  int (*fn)(const ckpt::cli::Args&);
};

const Verb kVerbs[] = {
    {"dump", ckpt::cli::cmd_dump},
    {"restore", ckpt::cli::cmd_restore},
    {"show", ckpt::cli::cmd_show},
    {"check", ckpt::cli::cmd_check},
    {"job", ckpt::cli::cmd_job},
    {"migrate", ckpt::cli::cmd_migrate},
    {"receive", ckpt::cli::cmd_receive},
    {"run", ckpt::cli::cmd_run},
    {"ps", ckpt::cli::cmd_ps},
    {"kill", ckpt::cli::cmd_kill},
    {"rm", ckpt::cli::cmd_rm},
};

int run(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    fputs(ckpt::cli::usage("").c_str(), stderr);
    return 2;
  }
  const std::string verb = args[0];
  if (verb == "--version" || verb == "version" || verb == "-V") {
    printf("ckpt %s\n", CKPT_VERSION);
    return 0;
  }
  if (verb == "help" || verb == "--help" || verb == "-h") {
    std::string topic = args.size() > 1 ? args[1] : "";
    if (topic == "job" && args.size() > 2) topic += " " + args[2];  // "help job run"
    std::string text = ckpt::cli::usage(topic);
    if (text.empty()) throw ckpt::UsageError("no such command: " + topic);
    fputs(text.c_str(), stdout);
    return 0;
  }
  for (const auto& v : kVerbs)
    if (verb == v.name) return v.fn(std::vector<std::string>(args.begin() + 1, args.end()));
  throw ckpt::UsageError("unknown command '" + verb + "' (see 'ckpt help')");
}

}  // namespace

int main(int argc, char** argv) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  ckpt::cancel::install_handlers();
  try {
    return run(argc, argv);
  } catch (const ckpt::UsageError& e) {
    fprintf(stderr, "ckpt: %s\n", e.what());
    return 2;
  } catch (const ckpt::Error& e) {
    fprintf(stderr, "ckpt: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fprintf(stderr, "ckpt: internal error: %s\n", e.what());
    return 1;
  }
}
