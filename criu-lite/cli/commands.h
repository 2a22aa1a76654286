// One function per CLI verb; main.cc dispatches. Each parses its own
// options (Boost.Program_options), runs the pipeline and prints one summary
// line. Errors propagate as ckpt::Error / UsageError to main.
#pragma once

#include <string>
#include <vector>

namespace ckpt::cli {

using Args = std::vector<std::string>;

int cmd_dump(const Args& args);
int cmd_restore(const Args& args);
int cmd_show(const Args& args);
int cmd_check(const Args& args);
int cmd_job(const Args& args);
// cmd_migrate.cc: live migration.
int cmd_migrate(const Args& args);
int cmd_receive(const Args& args);
// cmd_container.cc: the container launcher and its bookkeeping.
int cmd_run(const Args& args);
int cmd_ps(const Args& args);
int cmd_kill(const Args& args);
int cmd_rm(const Args& args);

// Usage text of a verb ("" for the overview).
std::string usage(const std::string& verb);

}  // namespace ckpt::cli
