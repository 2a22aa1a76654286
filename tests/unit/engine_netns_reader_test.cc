// Reading a network namespace in two steps (objects/netns.h NetnsReader,
// objects/namespaces.h NetnsDump) and its sysctl files kept open
// (objects/netns_parts.h SysctlFiles).
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <map>
#include <string>

#include <gtest/gtest.h>

#include "objects/namespaces.h"
#include "objects/netns.h"
#include "objects/netns_parts.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/netns_exec.h"

namespace ckpt {
namespace {

void write_sysctl(const char* path, const char* value) {
  UniqueFd fd = open_or_throw(path, O_WRONLY);
  ASSERT_GT(write(fd.get(), value, strlen(value)), 0);
}

TEST(SysctlFiles, ReadAgainSeesNewValuesAndNewDevices) {
  UniqueFd ns = new_netns();
  run_in_netns(ns.get(), [&] {
    netns::SysctlFiles files;
    ASSERT_GT(files.size(), 100u);
    std::map<std::string, std::string> kept;
    ASSERT_TRUE(files.read(&kept));
    EXPECT_EQ(kept, netns::read_sysctls_in_ns());

    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1");  // also flips conf/*/forwarding
    write_sysctl("/proc/sys/net/core/somaxconn", "1234");
    ASSERT_TRUE(files.read(&kept));
    EXPECT_EQ(kept["ipv4/ip_forward"], "1");
    EXPECT_EQ(kept["core/somaxconn"], "1234");
    EXPECT_EQ(kept, netns::read_sysctls_in_ns());

    // A new device has sysctls of its own, which were not opened.
    ProgramResult r = run_program({"ip", "link", "add", "rd0", "type", "veth", "peer", "rd1"});
    ASSERT_TRUE(r.ok()) << r.describe();
    EXPECT_FALSE(files.read(&kept));
  });
}

TEST(NetnsDump, PreparedThenStartedReadsTheNamespace) {
  UniqueFd ns = new_netns();
  run_in_netns(ns.get(), [&] { write_sysctl("/proc/sys/net/core/somaxconn", "777"); });
  NetnsDump d;
  d.prepare(UniqueFd(dup(ns.get())));
  // Changed after the prepare, before the start: the read sees it.
  run_in_netns(ns.get(), [&] { write_sysctl("/proc/sys/net/core/somaxconn", "778"); });
  d.start(UniqueFd(dup(ns.get())));
  img::NetNs got = d.take();
  bool found = false;
  for (const auto& s : got.sysctls())
    if (s.path() == "core/somaxconn") {
      EXPECT_EQ(s.value(), "778");
      found = true;
    }
  EXPECT_TRUE(found);
}

TEST(NetnsDump, StartedOnAnotherNamespaceReadsThatOne) {
  UniqueFd a = new_netns(), b = new_netns();
  run_in_netns(b.get(), [&] { write_sysctl("/proc/sys/net/core/somaxconn", "779"); });
  NetnsDump d;
  d.prepare(UniqueFd(dup(a.get())));
  d.start(UniqueFd(dup(b.get())));
  img::NetNs got = d.take();
  bool found = false;
  for (const auto& s : got.sysctls()) found |= s.path() == "core/somaxconn" && s.value() == "779";
  EXPECT_TRUE(found);
}

TEST(NetnsDump, PreparedButNeverStartedEnds) {
  UniqueFd ns = new_netns();
  {
    NetnsDump d;
    d.prepare(UniqueFd(dup(ns.get())));
    EXPECT_FALSE(d.started());
    EXPECT_THROW(d.take(), Error);
  }  // the destructor ends the waiting thread (a hang fails the test by timeout)
}

}  // namespace
}  // namespace ckpt
