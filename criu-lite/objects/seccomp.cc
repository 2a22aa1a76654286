// Seccomp: strict mode and BPF filters, per thread.
//
// Dump: every filter of a thread with PTRACE_SECCOMP_GET_FILTER (index 0 is
// the most recent) and its flags with PTRACE_SECCOMP_GET_METADATA; equal
// programs are stored once. Needs CAP_SYS_ADMIN.
//
// Restore: the very last remote syscalls of a process. The threads run with
// PTRACE_O_SUSPEND_SECCOMP meanwhile, so a filter installed first cannot
// deny the next calls; detaching clears that option. The programs go into a
// temporary mapping; filters are installed oldest first, with TSYNC once for
// all threads if they all have the same chain, else thread by thread;
// strict mode comes last.
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "objects/task_attrs.h"
#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt {

namespace {
// The options restore/restore.cc seizes its stubs with, plus the suspension.
constexpr unsigned kRestoreOptions =
    PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL | PTRACE_O_SUSPEND_SECCOMP;
}  // namespace

void dump_seccomp(DumpTask& t, img::TaskAttrs* a) {
  std::map<std::pair<std::string, uint64_t>, uint32_t> known;
  for (size_t i = 0; i < t.threads.size(); i++) {
    pid_t tid = t.threads[i].tid();
    img::ThreadAttrs* ta = a->mutable_threads(static_cast<int>(i));
    int mode =
        i == 0
            ? t.status.seccomp
            : proc::parse_status(read_file(strfmt("/proc/%d/task/%d/status", t.pid, tid))).seccomp;
    ta->set_seccomp_mode(static_cast<uint32_t>(mode));
    if (mode != SECCOMP_MODE_FILTER) continue;
    std::vector<uint32_t> newest_first;
    for (unsigned long idx = 0;; idx++) {
      long n = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, reinterpret_cast<void*>(idx), nullptr);
      if (n < 0 && errno == ENOENT) break;
      if (n < 0)
        throw_errno(strfmt("tid %d: PTRACE_SECCOMP_GET_FILTER%s", tid,
                           errno == EACCES ? " (needs CAP_SYS_ADMIN)" : ""));
      std::string prog(static_cast<size_t>(n) * sizeof(sock_filter), '\0');
      if (ptrace(PTRACE_SECCOMP_GET_FILTER, tid, reinterpret_cast<void*>(idx), prog.data()) != n)
        throw_errno(strfmt("tid %d: PTRACE_SECCOMP_GET_FILTER", tid));
      __ptrace_seccomp_metadata md{idx, 0};
      if (ptrace(PTRACE_SECCOMP_GET_METADATA, tid, reinterpret_cast<void*>(sizeof md), &md) < 0)
        md.flags = 0;  // only SECCOMP_FILTER_FLAG_LOG is reported; 4.16+
      auto key = std::make_pair(prog, md.flags & SECCOMP_FILTER_FLAG_LOG);
      auto it = known.find(key);
      if (it == known.end()) {
        it = known.emplace(key, static_cast<uint32_t>(a->seccomp_filters_size())).first;
        auto* f = a->add_seccomp_filters();
        f->set_prog(key.first);
        f->set_flags(key.second);
      }
      newest_first.push_back(it->second);
    }
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it)
      ta->add_seccomp_chain(*it);
  }
}

void restore_seccomp(std::vector<Tracee>& threads, uint64_t syscall_ip, pid_t pid,
                     const img::TaskAttrs& a) {
  bool any_filter = false, any_strict = false;
  for (const auto& ta : a.threads()) {
    any_filter |= ta.seccomp_mode() == SECCOMP_MODE_FILTER && ta.seccomp_chain_size() > 0;
    any_strict |= ta.seccomp_mode() == SECCOMP_MODE_STRICT;
  }
  if (!any_filter && !any_strict) return;
  if (a.threads_size() != static_cast<int>(threads.size()))
    throw Error("thread attributes do not match the threads");
  for (const auto& ta : a.threads())
    for (uint32_t k : ta.seccomp_chain())
      if (k >= static_cast<uint32_t>(a.seccomp_filters_size()))
        throw Error(strfmt("thread %u refers to missing filter %u", ta.tid(), k));

  for (auto& tr : threads)
    if (ptrace(PTRACE_SETOPTIONS, tr.tid(), nullptr, kRestoreOptions) != 0)
      LOG_WARN("tid %d: PTRACE_O_SUSPEND_SECCOMP: %s (the filters judge the last remote calls)",
               tr.tid(), strerror(errno));

  std::vector<std::unique_ptr<RemoteThread>> rts;
  for (auto& tr : threads) rts.push_back(std::make_unique<RemoteThread>(tr, syscall_ip));
  RemoteThread& leader = *rts[0];

  if (any_filter) {
    // Every program, each preceded by its struct sock_fprog, in one mapping.
    std::vector<uint64_t> off(static_cast<size_t>(a.seccomp_filters_size()));
    uint64_t size = 0;
    for (int k = 0; k < a.seccomp_filters_size(); k++) {
      off[static_cast<size_t>(k)] = size;
      size += sizeof(sock_fprog) + ((a.seccomp_filters(k).prog().size() + 7) & ~7ULL);
    }
    size = (size + 4095) & ~4095ULL;
    uint64_t base =
        leader.check("mmap for seccomp programs", __NR_mmap, 0, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, static_cast<uint64_t>(-1), 0);
    for (int k = 0; k < a.seccomp_filters_size(); k++) {
      const std::string& prog = a.seccomp_filters(k).prog();
      if (prog.empty() || prog.size() % sizeof(sock_filter) != 0 ||
          prog.size() / sizeof(sock_filter) > BPF_MAXINSNS)
        throw Error(strfmt("seccomp filter %d has a bad size %zu", k, prog.size()));
      uint64_t at = base + off[static_cast<size_t>(k)];
      sock_fprog fp{static_cast<unsigned short>(prog.size() / sizeof(sock_filter)),
                    reinterpret_cast<sock_filter*>(at + sizeof(sock_fprog))};
      remote_write(pid, at, &fp, sizeof fp);
      remote_write(pid, at + sizeof(sock_fprog), prog.data(), prog.size());
    }
    auto install = [&](RemoteThread& rt, uint32_t k, uint64_t extra) {
      uint64_t flags = a.seccomp_filters(static_cast<int>(k)).flags() | extra;
      long r = rt.call(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, base + off[k]);
      if (r < 0)
        throw Error(
            strfmt("tid %d: seccomp(SECCOMP_SET_MODE_FILTER)%s", rt.tracee().tid(),
                   r == -EACCES ? " (the task has neither no_new_privs nor CAP_SYS_ADMIN)" : ""),
            static_cast<int>(-r));
      if (r > 0) throw Error(strfmt("seccomp TSYNC failed on thread %ld", r));
    };
    // The same chain everywhere: once, synchronized to every thread.
    bool same = true;
    for (const auto& ta : a.threads())
      if (ta.seccomp_mode() != SECCOMP_MODE_FILTER ||
          !std::equal(ta.seccomp_chain().begin(), ta.seccomp_chain().end(),
                      a.threads(0).seccomp_chain().begin(), a.threads(0).seccomp_chain().end()))
        same = false;
    if (same) {
      for (uint32_t k : a.threads(0).seccomp_chain())
        install(leader, k, threads.size() > 1 ? SECCOMP_FILTER_FLAG_TSYNC : 0);
    } else {
      for (size_t i = 0; i < threads.size(); i++) {
        const auto& ta = a.threads(static_cast<int>(i));
        if (ta.seccomp_mode() != SECCOMP_MODE_FILTER) continue;
        for (uint32_t k : ta.seccomp_chain()) install(*rts[i], k, 0);
      }
    }
    long r = leader.call(__NR_munmap, base, size);
    if (r != 0)
      LOG_WARN("pid %d: unmap the seccomp programs: %s", pid, strerror(static_cast<int>(-r)));
  }

  for (size_t i = 0; i < threads.size(); i++)
    if (a.threads(static_cast<int>(i)).seccomp_mode() == SECCOMP_MODE_STRICT)
      rts[i]->check("prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT)", __NR_prctl, PR_SET_SECCOMP,
                    SECCOMP_MODE_STRICT);
}

}  // namespace ckpt
