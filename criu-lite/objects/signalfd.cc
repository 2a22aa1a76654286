// signalfd: the set of signals it reads ("sigmask:" in fdinfo, hex, bit
// N-1 for signal N). Restored with signalfd(-1, mask, flags). The pending
// signals themselves belong to the task and are restored with it.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "objects/fd_kind.h"
#include "sys/error.h"

namespace ckpt {

namespace {

class SignalFdKind : public FdKind {
 public:
  const char* name() const override { return "signalfd"; }
  bool matches(const FdProbe& p) const override { return p.link == "anon_inode:[signalfd]"; }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    *d->mutable_signalfd() = parse_signalfd_fdinfo(a.info);
  }
  bool owns(const img::FileDesc& d) const override { return d.has_signalfd(); }
  UniqueFd open(const img::FileDesc& d, FdRestoreState&) override {
    // The kernel's sigset for signals 1..64 is one word, bit N-1 for signal
    // N; glibc's sigset_t starts with that word. (sigaddset would refuse
    // glibc's internal signals 32 and 33.)
    sigset_t set;
    sigemptyset(&set);
    uint64_t mask = d.signalfd().mask();
    static_assert(sizeof(set) >= sizeof(mask));
    memcpy(&set, &mask, sizeof(mask));
    int flags = SFD_CLOEXEC | ((d.flags() & O_NONBLOCK) ? SFD_NONBLOCK : 0);
    UniqueFd fd(signalfd(-1, &set, flags));
    if (!fd) throw_errno(strfmt("signalfd mask %016llx", static_cast<unsigned long long>(mask)));
    return fd;
  }
};

}  // namespace

img::SignalFd parse_signalfd_fdinfo(const proc::FdInfo& info) {
  for (const auto& [k, v] : info.extra) {
    if (k != "sigmask") continue;
    errno = 0;
    char* end = nullptr;
    unsigned long long m = strtoull(v.c_str(), &end, 16);
    if (v.empty() || errno != 0 || *end != '\0')
      throw Error("fdinfo: sigmask: bad value '" + v + "'");
    img::SignalFd s;
    s.set_mask(m);
    return s;
  }
  throw Error("fdinfo has no 'sigmask:' line");
}

std::unique_ptr<FdKind> make_signalfd_kind() {
  return std::make_unique<SignalFdKind>();
}

}  // namespace ckpt
