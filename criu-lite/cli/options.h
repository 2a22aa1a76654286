// Options every verb shares (-v, --log-file) and the parsing glue around
// Boost.Program_options that turns its exceptions into UsageError.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace ckpt::cli {

namespace po = boost::program_options;

struct Common {
  int verbose = 0;
  std::string log_file;
};

// Adds -v/--verbose, --log-file, -h/--help to desc.
void add_common(po::options_description& desc, Common& c);
// Parses args against desc (positional as given); throws UsageError on bad
// input. Returns false if --help was given (usage printed).
bool parse(const std::vector<std::string>& args, const po::options_description& desc,
           const po::positional_options_description* pos, po::variables_map& vm,
           const std::string& verb);
// Applies -v and --log-file to the logger.
void apply_common(const Common& c);

std::string human_bytes(uint64_t b);

}  // namespace ckpt::cli
