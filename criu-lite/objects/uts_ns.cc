#include "objects/uts_ns.h"

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.h"
#include "sys/ns_thread.h"

namespace ckpt {

img::UtsNs dump_utsns(int utsns_fd) {
  img::UtsNs out;
  in_context("uts namespace", [&] {
    run_in_namespace(utsns_fd, CLONE_NEWUTS, [&] {
      utsname u{};
      if (uname(&u) != 0) throw_errno("uname");
      out.set_hostname(u.nodename, strnlen(u.nodename, sizeof u.nodename));
      out.set_domainname(u.domainname, strnlen(u.domainname, sizeof u.domainname));
    });
  });
  return out;
}

void restore_utsns(int utsns_fd, const img::UtsNs& uts) {
  in_context("uts namespace", [&] {
    run_in_namespace(utsns_fd, CLONE_NEWUTS, [&] {
      if (sethostname(uts.hostname().data(), uts.hostname().size()) != 0)
        throw_errno("sethostname '" + uts.hostname() + "'");
      if (setdomainname(uts.domainname().data(), uts.domainname().size()) != 0)
        throw_errno("setdomainname '" + uts.domainname() + "'");
    });
  });
}

}  // namespace ckpt
