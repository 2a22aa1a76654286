#include "cli/options.h"

#include <cstdio>

#include "cli/commands.h"
#include "sys/error.h"
#include "sys/log.h"

namespace ckpt::cli {

void add_common(po::options_description& desc, Common& c) {
  desc.add_options()("verbose,v",
                     po::value<int>(&c.verbose)->implicit_value(1)->zero_tokens()->default_value(0),
                     "more detail (-v steps and timings, -vv every syscall)")(
      "log-file,o", po::value<std::string>(&c.log_file), "also write the full log to FILE")(
      "help,h", "show this help");
}

bool parse(const std::vector<std::string>& args, const po::options_description& desc,
           const po::positional_options_description* pos, po::variables_map& vm,
           const std::string& verb) {
  try {
    // "-vv" means verbose twice.
    std::vector<std::string> a;
    int extra_v = 0;
    for (const auto& s : args) {
      if (s.size() > 2 && s[0] == '-' && s[1] == 'v' &&
          s.find_first_not_of('v', 1) == std::string::npos)
        extra_v += static_cast<int>(s.size()) - 1;
      else
        a.push_back(s);
    }
    po::command_line_parser p(a);
    p.options(desc);
    if (pos) p.positional(*pos);
    po::store(p.run(), vm);
    // --help wins over missing required options.
    if (vm.count("help")) {
      fputs(usage(verb).c_str(), stdout);
      return false;
    }
    po::notify(vm);
    if (extra_v) vm.at("verbose").value() = extra_v;
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see 'ckpt help " + verb + "')");
  }
  return true;
}

void apply_common(const Common& c) {
  if (c.verbose >= 2)
    log::set_level(log::Level::Trace);
  else if (c.verbose == 1)
    log::set_level(log::Level::Debug);
  if (!c.log_file.empty()) log::set_file(c.log_file);
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    u++;
  }
  return u == 0 ? strfmt("%llu B", static_cast<unsigned long long>(b))
                : strfmt("%.1f %s", v, units[u]);
}

}  // namespace ckpt::cli
