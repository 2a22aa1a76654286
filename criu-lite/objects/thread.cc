#include "objects/thread.h"

#include <linux/capability.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/log.h"

namespace ckpt {

namespace {
constexpr long kERESTARTSYS = 512;
constexpr long kERESTARTNOINTR = 513;
constexpr long kERESTARTNOHAND = 514;
constexpr long kERESTART_RESTARTBLOCK = 516;

img::Creds creds_from_status(const proc::Status& st) {
  img::Creds c;
  for (uint32_t u : st.uid) c.add_uids(u);
  for (uint32_t g : st.gid) c.add_gids(g);
  for (uint32_t g : st.groups) c.add_groups(g);
  c.set_cap_inh(st.cap_inh);
  c.set_cap_prm(st.cap_prm);
  c.set_cap_eff(st.cap_eff);
  c.set_cap_bnd(st.cap_bnd);
  c.set_cap_amb(st.cap_amb);
  return c;
}
}  // namespace

Regs normalize_regs(const Regs& in) {
  Regs r = in;
  if (static_cast<long>(r.orig_rax) >= 0) {
    long ret = -static_cast<long>(r.rax);
    switch (ret) {
      case kERESTARTSYS:
      case kERESTARTNOINTR:
      case kERESTARTNOHAND:
        r.rax = r.orig_rax;
        r.rip -= 2;
        break;
      case kERESTART_RESTARTBLOCK:
        // The restart block lives in the kernel's task and is lost; the
        // program sees the syscall interrupted, as after a signal.
        r.rax = static_cast<uint64_t>(-EINTR);
        break;
      default:
        break;
    }
  }
  r.orig_rax = static_cast<uint64_t>(-1);
  return r;
}

img::X86Regs regs_to_image(const Regs& r) {
  img::X86Regs o;
  o.set_r15(r.r15);
  o.set_r14(r.r14);
  o.set_r13(r.r13);
  o.set_r12(r.r12);
  o.set_rbp(r.rbp);
  o.set_rbx(r.rbx);
  o.set_r11(r.r11);
  o.set_r10(r.r10);
  o.set_r9(r.r9);
  o.set_r8(r.r8);
  o.set_rax(r.rax);
  o.set_rcx(r.rcx);
  o.set_rdx(r.rdx);
  o.set_rsi(r.rsi);
  o.set_rdi(r.rdi);
  o.set_orig_rax(r.orig_rax);
  o.set_rip(r.rip);
  o.set_cs(r.cs);
  o.set_eflags(r.eflags);
  o.set_rsp(r.rsp);
  o.set_ss(r.ss);
  o.set_fs_base(r.fs_base);
  o.set_gs_base(r.gs_base);
  o.set_ds(r.ds);
  o.set_es(r.es);
  o.set_fs(r.fs);
  o.set_gs(r.gs);
  return o;
}

Regs regs_from_image(const img::X86Regs& o) {
  Regs r{};
  r.r15 = o.r15();
  r.r14 = o.r14();
  r.r13 = o.r13();
  r.r12 = o.r12();
  r.rbp = o.rbp();
  r.rbx = o.rbx();
  r.r11 = o.r11();
  r.r10 = o.r10();
  r.r9 = o.r9();
  r.r8 = o.r8();
  r.rax = o.rax();
  r.rcx = o.rcx();
  r.rdx = o.rdx();
  r.rsi = o.rsi();
  r.rdi = o.rdi();
  r.orig_rax = o.orig_rax();
  r.rip = o.rip();
  r.cs = o.cs();
  r.eflags = o.eflags();
  r.rsp = o.rsp();
  r.ss = o.ss();
  r.fs_base = o.fs_base();
  r.gs_base = o.gs_base();
  r.ds = o.ds();
  r.es = o.es();
  r.fs = o.fs();
  r.gs = o.gs();
  return r;
}

void dump_thread(DumpTask& t, size_t idx, img::ThreadCore* out) {
  Tracee& tr = t.threads[idx];
  pid_t tid = tr.tid();
  out->set_tid(static_cast<uint32_t>(idx < t.vtids.size() ? t.vtids[idx] : tid));
  *out->mutable_regs() = regs_to_image(t.regs[idx]);
  out->set_xstate(tr.get_xstate());
  out->set_blocked_mask(t.sigmasks[idx]);
  for (auto& si : tr.peek_siginfo(false)) out->add_pending()->set_raw(si);

  std::string comm = read_file(strfmt("/proc/%d/task/%d/comm", t.pid, tid));
  while (!comm.empty() && comm.back() == '\n') comm.pop_back();
  out->set_comm(comm);

  uint64_t head = 0;
  size_t len = 0;
  if (syscall(SYS_get_robust_list, tid, &head, &len) != 0)
    throw_errno(strfmt("get robust list of tid %d", tid));
  out->set_robust_list(head);
  out->set_robust_list_len(len);

  ckpt_rseq_configuration rc = tr.get_rseq();
  if (rc.rseq_abi_pointer) {
    auto* rs = out->mutable_rseq();
    rs->set_ptr(rc.rseq_abi_pointer);
    rs->set_len(rc.rseq_abi_size);
    rs->set_sig(rc.signature);
  }

  // clear_child_tid and the alternate stack are only visible from inside
  // the thread: ask it with remote syscalls.
  RemoteThread local(tr, t.remote->syscall_ip());
  RemoteThread& rt = idx == 0 ? *t.remote : local;
  rt.check("prctl(PR_GET_TID_ADDRESS)", __NR_prctl, PR_GET_TID_ADDRESS, t.scratch.addr());
  uint64_t ctid = 0;
  t.scratch.read(t.pid, 0, &ctid, sizeof ctid);
  out->set_clear_child_tid(ctid);
  rt.check("sigaltstack", __NR_sigaltstack, 0, t.scratch.addr());
  stack_t ss{};
  t.scratch.read(t.pid, 0, &ss, sizeof ss);
  auto* as = out->mutable_altstack();
  as->set_sp(reinterpret_cast<uint64_t>(ss.ss_sp));
  as->set_flags(static_cast<uint32_t>(ss.ss_flags));
  as->set_size(ss.ss_size);

  proc::Status st = proc::parse_status(read_file(strfmt("/proc/%d/task/%d/status", t.pid, tid)));
  img::Creds c = creds_from_status(st);
  c.set_securebits(
      static_cast<uint32_t>(rt.check("prctl(PR_GET_SECUREBITS)", __NR_prctl, PR_GET_SECUREBITS)));
  c.set_keepcaps(rt.check("prctl(PR_GET_KEEPCAPS)", __NR_prctl, PR_GET_KEEPCAPS) != 0);
  *out->mutable_creds() = c;
}

void restore_thread_state(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::ThreadCore& tc) {
  rt.check("set_tid_address", __NR_set_tid_address, tc.clear_child_tid());
  if (tc.robust_list())
    rt.check("set_robust_list", __NR_set_robust_list, tc.robust_list(), tc.robust_list_len());
  if (tc.has_altstack() && !(tc.altstack().flags() & SS_DISABLE)) {
    stack_t ss{};
    ss.ss_sp = reinterpret_cast<void*>(tc.altstack().sp());
    ss.ss_flags = static_cast<int>(tc.altstack().flags() & ~SS_ONSTACK);
    ss.ss_size = tc.altstack().size();
    scratch.write(pid, 0, &ss, sizeof ss);
    rt.check("sigaltstack", __NR_sigaltstack, scratch.addr(), 0);
  }
  if (tc.has_rseq() && tc.rseq().ptr())
    rt.check("rseq register", __NR_rseq, tc.rseq().ptr(), tc.rseq().len(), 0, tc.rseq().sig());
  char name[16] = {};
  strncpy(name, tc.comm().c_str(), sizeof name - 1);
  scratch.write(pid, 0, name, sizeof name);
  rt.check("prctl(PR_SET_NAME)", __NR_prctl, PR_SET_NAME, scratch.addr());
}

namespace {

// The stub starts with ckpt's own credentials; when the saved ones are the
// same (a tree running as root, the usual case) there is nothing to set, and
// the thirty-odd remote syscalls that setting them takes are saved.
bool same_as_ours(const img::Creds& c) {
  uid_t r, e, s;
  gid_t gr, ge, gs;
  if (getresuid(&r, &e, &s) != 0 || getresgid(&gr, &ge, &gs) != 0) return false;
  if (c.uids(0) != r || c.uids(1) != e || c.uids(2) != s || c.uids(3) != e) return false;
  if (c.gids(0) != gr || c.gids(1) != ge || c.gids(2) != gs || c.gids(3) != ge) return false;
  std::vector<gid_t> groups(static_cast<size_t>(std::max(getgroups(0, nullptr), 0)));
  if (getgroups(static_cast<int>(groups.size()), groups.data()) < 0) return false;
  if (std::vector<uint32_t>(groups.begin(), groups.end()) !=
      std::vector<uint32_t>(c.groups().begin(), c.groups().end()))
    return false;
  proc::Status me = proc::parse_status(read_file("/proc/thread-self/status"));
  return c.cap_inh() == me.cap_inh && c.cap_prm() == me.cap_prm && c.cap_eff() == me.cap_eff &&
         c.cap_bnd() == me.cap_bnd && c.cap_amb() == me.cap_amb &&
         static_cast<int>(c.securebits()) == prctl(PR_GET_SECUREBITS) &&
         c.keepcaps() == (prctl(PR_GET_KEEPCAPS) == 1);
}

}  // namespace

void restore_thread_creds(RemoteThread& rt, const RemoteScratch& scratch, pid_t pid,
                          const img::Creds& c) {
  if (c.uids_size() != 4 || c.gids_size() != 4) throw Error("credentials image is incomplete");
  if (same_as_ours(c)) return;
  static const unsigned last_cap = [] {
    std::string s;
    return try_read_file("/proc/sys/kernel/cap_last_cap", &s)
               ? static_cast<unsigned>(atoi(s.c_str()))
               : 63u;
  }();
  std::vector<gid_t> groups(c.groups().begin(), c.groups().end());
  if (!groups.empty()) scratch.write(pid, 0, groups.data(), groups.size() * sizeof(gid_t));
  rt.check("setgroups", __NR_setgroups, groups.size(), scratch.addr());
  rt.check("setresgid", __NR_setresgid, c.gids(0), c.gids(1), c.gids(2));
  rt.call(__NR_setfsgid, c.gids(3));
  // Drop from the bounding set while we still hold CAP_SETPCAP.
  for (unsigned cap = 0; cap <= last_cap && cap < 64; cap++) {
    if (c.cap_bnd() & (1ULL << cap)) continue;
    long r = rt.call(__NR_prctl, PR_CAPBSET_READ, cap);
    if (r == 1) rt.check("prctl(PR_CAPBSET_DROP)", __NR_prctl, PR_CAPBSET_DROP, cap);
  }
  // Keep the permitted set across the uid change, then trim it with capset.
  rt.check("prctl(PR_SET_SECUREBITS)", __NR_prctl, PR_SET_SECUREBITS,
           c.securebits() | (1u << 4) /* SECBIT_KEEP_CAPS */);
  rt.check("setresuid", __NR_setresuid, c.uids(0), c.uids(1), c.uids(2));
  rt.call(__NR_setfsuid, c.uids(3));
  struct {
    __user_cap_header_struct hdr;
    __user_cap_data_struct data[2];
  } caps{};
  caps.hdr.version = _LINUX_CAPABILITY_VERSION_3;
  caps.hdr.pid = 0;
  caps.data[0].effective = static_cast<uint32_t>(c.cap_eff());
  caps.data[1].effective = static_cast<uint32_t>(c.cap_eff() >> 32);
  caps.data[0].permitted = static_cast<uint32_t>(c.cap_prm());
  caps.data[1].permitted = static_cast<uint32_t>(c.cap_prm() >> 32);
  caps.data[0].inheritable = static_cast<uint32_t>(c.cap_inh());
  caps.data[1].inheritable = static_cast<uint32_t>(c.cap_inh() >> 32);
  scratch.write(pid, 0, &caps, sizeof caps);
  rt.check("capset", __NR_capset, scratch.addr(), scratch.addr() + sizeof caps.hdr);
  for (unsigned cap = 0; cap < 64; cap++)
    if (c.cap_amb() & (1ULL << cap))
      rt.check("prctl(PR_CAP_AMBIENT_RAISE)", __NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap,
               0, 0);
  // The securebits as they were; this may fail once CAP_SETPCAP is gone, in
  // which case only keep-caps can still be put back.
  if (rt.call(__NR_prctl, PR_SET_SECUREBITS, c.securebits()) < 0)
    rt.call(__NR_prctl, PR_SET_KEEPCAPS, c.keepcaps() ? 1 : 0);
}

void restore_thread_regs(Tracee& t, const img::ThreadCore& tc) {
  if (!tc.xstate().empty()) t.set_xstate(tc.xstate());
  Regs r = regs_from_image(tc.regs());
  r.orig_rax = static_cast<uint64_t>(-1);
  t.set_regs(r);
}

}  // namespace ckpt
