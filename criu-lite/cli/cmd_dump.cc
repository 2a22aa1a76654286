#include <unistd.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/progress_bar.h"
#include "container/state.h"
#include "dump/dump.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::cli {

int cmd_dump(const Args& args) {
  Common common;
  pid_t pid = 0;
  std::string dir;
  int compress = 0;
  std::string container, freeze_cgroup;
  DumpRequest req;
  po::options_description desc("dump");
  desc.add_options()("tree,t", po::value<pid_t>(&pid), "root pid")(
      "container", po::value<std::string>(&container), "a container started by ckpt run")(
      "freeze-cgroup", po::value<std::string>(&freeze_cgroup), "freeze this cgroup first")(
      "images-dir,D", po::value<std::string>(&dir)->required(), "image directory")(
      "leave-running,R", po::bool_switch(&req.opts.leave_running), "resume after dump")(
      "compress", po::value<int>(&compress)->implicit_value(1), "zstd level")(
      "shell-job,j", po::bool_switch(&req.opts.shell_job), "session or terminal outside the tree")(
      "prev-images-dir", po::value<std::string>(&req.parent_dir),
      "parent checkpoint (relative to -D)")(
      "tcp-established", po::bool_switch(&req.opts.tcp_established),
      "save established TCP connections")("tcp-close", po::bool_switch(&req.opts.tcp_close),
                                          "established TCP connections come back closed");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "dump")) return 0;
  apply_common(common);
  if (!container.empty()) {
    if (vm.count("tree")) throw UsageError("give either -t PID or --container NAME, not both");
    img::ContainerState s = container::load_state(container);
    if (!container::init_alive(s)) throw Error("container " + container + " is not running");
    pid = s.init_pid();
    req.cgroup_paths.assign(s.cgroup_paths().begin(), s.cgroup_paths().end());
    if (!freeze_cgroup.empty()) throw UsageError("--container freezes the container's cgroup");
    req.save_cgroup = true;
    req.container = s;
  } else if (!vm.count("tree")) {
    throw UsageError("dump needs the tree to dump: -t PID (--tree) or --container NAME");
  }
  if (!freeze_cgroup.empty()) req.cgroup_paths = {freeze_cgroup};
  if (pid <= 0) throw UsageError("-t needs a positive pid");
  if (compress < 0 || compress > 19) throw UsageError("--compress level must be 1 to 19");
  if (req.opts.tcp_established && req.opts.tcp_close)
    throw UsageError("--tcp-established and --tcp-close exclude each other");
  req.pid = pid;
  req.dir = dir;
  req.opts.zstd_level = compress;
  ProgressBar bar;
  if (ProgressBar::wanted()) req.progress = &bar;

  if (vm.count("prev-images-dir") && req.parent_dir.empty())
    throw UsageError("--prev-images-dir needs a directory");
  DumpResult r = dump_tree(req);
  const auto& s = r.stats;
  std::string parent;
  if (!req.parent_dir.empty())
    parent =
        strfmt(", %llu unchanged in the parent", static_cast<unsigned long long>(s.parent_pages));
  printf(
      "dumped %u tasks, %u threads, %u vmas, %llu pages (%s stored%s) in %.3f s; frozen %.1f "
      "ms%s\n",
      s.tasks, s.threads, s.vmas, static_cast<unsigned long long>(s.pages),
      human_bytes(s.page_bytes).c_str(), parent.c_str(), static_cast<double>(r.total_us) / 1e6,
      static_cast<double>(r.frozen_us) / 1e3, req.opts.leave_running ? "; tree left running" : "");
  return 0;
}

}  // namespace ckpt::cli
