// ckpt job run / ckpt job status: checkpoint-protected batch jobs.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "cli/commands.h"
#include "cli/options.h"
#include "job/checkpoint_dir.h"
#include "job/supervisor.h"
#include "sys/error.h"

namespace ckpt::cli {

namespace {

// "SIGTERM", "TERM", "term" or "15".
int parse_signal(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) {
    int n = std::stoi(s);
    if (n >= 1 && n < 65) return n;
  } else {
    std::string name = s;
    for (auto& c : name) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
    if (name.rfind("SIG", 0) == 0) name = name.substr(3);
    for (int n = 1; n < 32; n++)
      if (const char* a = sigabbrev_np(n); a && name == a) return n;
  }
  throw UsageError("job run: unknown signal '" + s + "'");
}

int job_run(const Args& args) {
  // Everything after "--" is the command, however it looks.
  Args own, cmd;
  bool seen = false;
  for (const auto& a : args) {
    if (!seen && a == "--") {
      seen = true;
      continue;
    }
    (seen ? cmd : own).push_back(a);
  }
  Common common;
  job::JobOptions o;
  std::vector<std::string> signals;
  int compress = 0, keep = 3;
  po::options_description desc("job run");
  desc.add_options()("checkpoint-dir", po::value<std::string>(&o.dir)->required(),
                     "checkpoint directory")(
      "interval", po::value<int>(&o.interval_s)->default_value(0), "seconds between checkpoints")(
      "keep", po::value<int>(&keep)->default_value(3), "checkpoints kept")(
      "signal", po::value<std::vector<std::string>>(&signals), "checkpoint-and-stop signal")(
      "incremental", po::bool_switch(&o.incremental), "store only pages written since")(
      "full-every", po::value<int>(&o.full_every)->default_value(8), "a full one every N")(
      "compress", po::value<int>(&compress)->implicit_value(1), "zstd level");
  add_common(desc, common);
  po::variables_map vm;
  if (!parse(own, desc, nullptr, vm, "job run")) return 0;
  apply_common(common);
  if (!seen || cmd.empty())
    throw UsageError("job run: give the command after -- (see 'ckpt help job run')");
  if (o.interval_s < 0) throw UsageError("job run: --interval must be 0 or more seconds");
  if (keep < 1) throw UsageError("job run: --keep must be at least 1");
  if (o.full_every < 1) throw UsageError("job run: --full-every must be at least 1");
  if (compress < 0 || compress > 19) throw UsageError("--compress level must be 1 to 19");
  o.keep = static_cast<size_t>(keep);
  o.zstd_level = compress;
  o.argv = cmd;
  if (signals.empty()) signals.push_back("SIGTERM");
  for (const auto& s : signals) o.signals.push_back(parse_signal(s));
  o.note = [](const std::string& line) {
    fprintf(stderr, "ckpt job: %s\n", line.c_str());
    fflush(stderr);
  };
  return job::run_job(o);
}

std::string local_time(uint64_t t) {
  time_t tt = static_cast<time_t>(t);
  tm lt{};
  localtime_r(&tt, &lt);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &lt);
  return buf;
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      o += std::string("\\") + c;
    else if (static_cast<unsigned char>(c) < 0x20)
      o += strfmt("\\u%04x", c);
    else
      o += c;
  }
  return o + "\"";
}

int job_status(const Args& args) {
  Common common;
  std::string dir;
  bool json = false;
  po::options_description desc("job status");
  desc.add_options()("checkpoint-dir", po::value<std::string>(&dir)->required(),
                     "checkpoint directory")("json", po::bool_switch(&json), "print JSON");
  add_common(desc, common);
  po::positional_options_description pos;
  pos.add("checkpoint-dir", 1);
  po::variables_map vm;
  if (!parse(args, desc, &pos, vm, "job status")) return 0;
  apply_common(common);
  if (access(dir.c_str(), F_OK) != 0 && errno == ENOENT) {
    // Not created yet (the job has not started): nothing to resume from.
    if (json)
      printf(
          "{\"dir\": %s, \"latest\": \"\", \"resume_from\": \"\", \"checkpoints\": [],\n"
          " \"leftovers\": []}\n",
          json_str(dir).c_str());
    else
      printf("%s: no checkpoints (no such directory)\n", dir.c_str());
    return 0;
  }
  job::CheckpointDir cd(dir, false);
  auto all = cd.list();
  auto usable = cd.restorable();
  std::string latest = cd.latest();
  auto leftovers = cd.leftovers();
  auto is_usable = [&](const std::string& n) {
    return std::find(usable.begin(), usable.end(), n) != usable.end();
  };
  if (json) {
    printf("{\"dir\": %s, \"latest\": %s, \"resume_from\": %s, \"checkpoints\": [",
           json_str(dir).c_str(), json_str(latest).c_str(),
           json_str(usable.empty() ? "" : usable[0]).c_str());
    for (size_t i = 0; i < all.size(); i++) {
      const auto& c = all[i];
      printf(
          "%s\n  {\"name\": %s, \"complete\": %s, \"restorable\": %s, \"time\": %llu, "
          "\"bytes\": %llu, \"parent\": %s, \"pages\": %llu, \"parent_pages\": %llu, "
          "\"tasks\": %u}",
          i ? "," : "", json_str(c.name).c_str(), c.complete ? "true" : "false",
          is_usable(c.name) ? "true" : "false", static_cast<unsigned long long>(c.time_unix),
          static_cast<unsigned long long>(c.bytes), json_str(c.parent).c_str(),
          static_cast<unsigned long long>(c.pages), static_cast<unsigned long long>(c.parent_pages),
          c.tasks);
    }
    printf("],\n \"leftovers\": [");
    for (size_t i = 0; i < leftovers.size(); i++)
      printf("%s%s", i ? ", " : "", json_str(leftovers[i]).c_str());
    printf("]}\n");
    return 0;
  }
  if (all.empty()) {
    printf("%s: no checkpoints\n", dir.c_str());
  } else {
    printf("%-13s %-19s %10s  %-13s %9s %9s %s\n", "checkpoint", "time", "size", "parent", "pages",
           "unchanged", "");
    for (const auto& c : all) {
      std::string mark = c.name == latest ? "latest" : "";
      if (!c.complete)
        mark = "incomplete, ignored";
      else if (!is_usable(c.name))
        mark = "parent chain broken, ignored";
      printf("%-13s %-19s %10s  %-13s %9llu %9llu %s\n", c.name.c_str(),
             c.complete ? local_time(c.time_unix).c_str() : "-", human_bytes(c.bytes).c_str(),
             c.parent.empty() ? "- (full)" : c.parent.c_str(),
             static_cast<unsigned long long>(c.pages),
             static_cast<unsigned long long>(c.parent_pages), mark.c_str());
    }
  }
  for (const auto& l : leftovers)
    printf("%s: left by an interrupted checkpoint or removal, ignored\n", l.c_str());
  if (!usable.empty()) printf("a job run with this directory resumes from %s\n", usable[0].c_str());
  return 0;
}

}  // namespace

int cmd_job(const Args& args) {
  if (args.empty()) throw UsageError("job: give a subcommand, run or status (see 'ckpt help job')");
  Args rest(args.begin() + 1, args.end());
  if (args[0] == "run") return job_run(rest);
  if (args[0] == "status") return job_status(rest);
  if (args[0] == "--help" || args[0] == "-h") {
    fputs(usage("job").c_str(), stdout);
    return 0;
  }
  throw UsageError("job: unknown subcommand '" + args[0] + "' (run or status)");
}

}  // namespace ckpt::cli
