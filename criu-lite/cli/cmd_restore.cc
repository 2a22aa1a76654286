#include <sys/wait.h>

#include <cstdio>
#include <optional>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/progress_bar.h"
#include "container/run.h"
#include "objects/lazy_pages.h"
#include "restore/restore.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::cli {

int cmd_restore(const Args& args) {
  Common common;
  RestoreRequest req;
  std::string container, net;
  bool lazy = false;
  po::options_description desc("restore");
  desc.add_options()("images-dir,D", po::value<std::string>(&req.dir)->required(),
                     "image directory")("restore-detached,d", po::bool_switch(&req.detach),
                                        "return once the tree runs")(
      "pidfile", po::value<std::string>(&req.pidfile), "write root pid here")(
      "container", po::value<std::string>(&container), "restore as this container")(
      "net", po::value<std::string>(&net), "bridge=BR[,host_ifname=IF] for the veth")(
      "shell-job,j", po::bool_switch(&req.shell_job), "join this terminal and session")(
      "tcp-established", po::bool_switch(&req.tcp_established),
      "restore established TCP connections")(
      "lazy-pages", po::bool_switch(&lazy),
      "run the tree first, fill its private memory behind (faults served at once)");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "restore")) return 0;
  apply_common(common);
  if (!net.empty()) req.net = parse_net_options(net);
  if (!container.empty()) {
    container::prepare_restore(container);
    req.cgroup_name = container;
  }
  ProgressBar bar;
  if (ProgressBar::wanted()) req.progress = &bar;

  std::optional<ImagePageSource> pages;
  std::optional<LazyPager> pager;
  req.on_running = [&](const RestoreResult& r) {
    if (pager) pager->guard(r.root);
    if (!container.empty()) {
      if (!r.container)
        throw Error("the images are not of a container (dumped without --container)");
      img::ContainerState s = *r.container;
      s.set_name(container);
      container::record_restored(s, r.root, r.cgroup_paths, req.net.bridge, req.net.host_ifname);
    }
    // Without -d the summary goes to stderr: stdout may be the tree's own.
    FILE* out = req.detach ? stdout : stderr;
    fprintf(out, "restored %u tasks, %u threads, %llu pages in %.3f s; root pid %d\n", r.tasks,
            r.threads, static_cast<unsigned long long>(r.pages),
            static_cast<double>(r.total_us) / 1e6, r.root);
    fflush(out);
  };
  // --lazy-pages: the pager lives in this process, which stays until the
  // tree's memory is complete (with -d too).
  if (lazy) {
    // One source for both: the images are mapped and read once.
    req.source = std::make_shared<image::DirSource>(req.dir);
    pages.emplace(req.source);
    pager.emplace(*pages);
    req.lazy = &*pager;
  }
  RestoreResult r = restore_tree(req);
  if (pager) {
    pager->wait_done();
    LazyStats st = pager->stats();
    LOG_INFO("lazy pages: %llu faults (%llu zero, slowest %llu us), %llu pages filled behind",
             static_cast<unsigned long long>(st.faults),
             static_cast<unsigned long long>(st.zero_faults),
             static_cast<unsigned long long>(st.max_fault_us),
             static_cast<unsigned long long>(st.filled));
  }
  if (req.detach) return 0;
  if (WIFEXITED(r.exit_status)) return WEXITSTATUS(r.exit_status);
  if (WIFSIGNALED(r.exit_status)) return 128 + WTERMSIG(r.exit_status);
  return 1;
}

}  // namespace ckpt::cli
