// ckpt migrate / ckpt receive: live migration (migrate/migration.h).
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/progress_bar.h"
#include "migrate/migration.h"
#include "migrate/transport.h"
#include "objects/netns.h"
#include "sys/error.h"

namespace ckpt::cli {

int cmd_migrate(const Args& args) {
  Common common;
  migrate::MigrateRequest req;
  std::string mode = "precopy", psk;
  int compress = 0;
  po::options_description desc("migrate");
  desc.add_options()("tree,t", po::value<pid_t>(&req.pid), "root pid")(
      "container", po::value<std::string>(&req.container), "a container started by ckpt run")(
      "to", po::value<std::string>(&req.to)->required(), "HOST:PORT of ckpt receive")(
      "psk-file", po::value<std::string>(&psk), "shared key file")(
      "mode", po::value<std::string>(&mode), "precopy | postcopy | stop-and-copy")(
      "max-rounds", po::value<int>(&req.max_rounds), "pre-copy rounds at most")(
      "target-downtime", po::value<int>(&req.target_downtime_ms), "ms")(
      "compress", po::value<int>(&compress)->implicit_value(1), "zstd level");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "migrate")) return 0;
  apply_common(common);
  if (req.container.empty() == !vm.count("tree"))
    throw UsageError("migrate needs the tree: -t PID or --container NAME (one of them)");
  if (vm.count("tree") && req.pid <= 0) throw UsageError("-t needs a positive pid");
  if (compress < 0 || compress > 19) throw UsageError("--compress level must be 1 to 19");
  if (req.max_rounds < 1 || req.max_rounds > 100) throw UsageError("--max-rounds must be 1 to 100");
  if (req.target_downtime_ms < 1) throw UsageError("--target-downtime must be positive (ms)");
  try {
    req.mode = migrate::parse_mode(mode);
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  req.zstd_level = compress;
  if (!psk.empty()) req.key = migrate::read_psk_file(psk);
  ProgressBar bar;
  if (ProgressBar::wanted()) req.progress = &bar;
  migrate::MigrateResult r = migrate::migrate(req);
  fputs(migrate::format_table(r, req.mode).c_str(), stdout);
  printf("migrated %s to %s (%s) in %.3f s; downtime %.1f ms\n",
         req.container.empty() ? strfmt("pid %d", req.pid).c_str()
                               : ("container " + req.container).c_str(),
         r.peer.c_str(), migrate::mode_name(req.mode), static_cast<double>(r.total_us) / 1e6,
         static_cast<double>(r.downtime_us) / 1e3);
  return 0;
}

int cmd_receive(const Args& args) {
  Common common;
  migrate::ReceiveRequest req;
  std::string psk, net;
  po::options_description desc("receive");
  desc.add_options()("listen", po::value<std::string>(&req.listen)->required(), "ADDR:PORT")(
      "once", po::bool_switch(&req.once), "exit after one migration")(
      "psk-file", po::value<std::string>(&psk), "shared key file")(
      "net", po::value<std::string>(&net), "bridge=BR[,host_ifname=IF] for the veth")(
      "work-dir", po::value<std::string>(&req.work_dir), "keep a copy of the final images");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(args, desc, nullptr, vm, "receive")) return 0;
  apply_common(common);
  if (!net.empty()) req.net = parse_net_options(net);
  if (!psk.empty()) req.key = migrate::read_psk_file(psk);
  req.on_done = [](const std::string& summary) {
    printf("%s\n", summary.c_str());
    fflush(stdout);
  };
  return migrate::receive(req);
}

}  // namespace ckpt::cli
