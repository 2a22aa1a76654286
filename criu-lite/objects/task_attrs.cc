#include "objects/task_attrs.h"

#include <fcntl.h>

#include <cstdlib>
#include <string>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt {

void dump_task_attrs(DumpTask& t, img::TaskCore* core) {
  auto* a = core->mutable_attrs();
  std::string oom = read_file(strfmt("/proc/%d/oom_score_adj", t.pid));
  a->set_oom_score_adj(atoi(oom.c_str()));
}

void restore_task_attrs(RemoteThread& leader, const RemoteScratch& scratch, pid_t pid,
                        const img::TaskCore& core) {
  const auto& a = core.attrs();
  // Written from outside: lowering it needs CAP_SYS_RESOURCE in the task,
  // which the task may not have once its credentials are back.
  std::string v = std::to_string(a.oom_score_adj()) + "\n";
  UniqueFd f = open_or_throw(strfmt("/proc/%d/oom_score_adj", pid), O_WRONLY);
  write_full(f.get(), v.data(), v.size(), "oom_score_adj");
}

void restore_task_attrs_last(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                             const img::TaskCore& core) {}

}  // namespace ckpt
