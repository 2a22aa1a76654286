// SysV semaphore sets: every value (GETALL, SETALL). What processes hold
// in their undo lists (SEM_UNDO adjustments) is per process and not seen
// here (docs/limits.md).
#include <sys/sem.h>

#include <cerrno>
#include <vector>

#include "objects/ipc_common.h"
#include "sys/error.h"
#include "sys/ns_thread.h"

namespace ckpt::ipc {

namespace {

union Semun {
  int val;
  semid_ds* buf;
  unsigned short* array;
  seminfo* info;
};

}  // namespace

void dump_sem(img::IpcNs& ns) {
  seminfo info{};
  Semun arg{};
  arg.info = &info;
  int max = semctl(0, 0, SEM_INFO, arg);
  if (max < 0) throw_errno("semctl(SEM_INFO)");
  for (int idx = 0; idx <= max; idx++) {
    semid_ds ds{};
    arg.buf = &ds;
    int id = semctl(idx, 0, SEM_STAT_ANY, arg);
    if (id < 0) {
      if (errno == EINVAL || errno == EIDRM) continue;
      throw_errno(strfmt("semctl(%d, SEM_STAT_ANY)", idx));
    }
    img::SysvSem* s = ns.add_sem();
    *s->mutable_perm() = perm_of(ds.sem_perm, id);
    in_context(describe("sem", s->perm()), [&] {
      std::vector<unsigned short> v(ds.sem_nsems);
      arg.array = v.data();
      if (semctl(id, 0, GETALL, arg) != 0) throw_errno("semctl(GETALL)");
      for (unsigned short x : v) s->add_values(x);
    });
  }
}

void restore_sem(const img::IpcNs& ns) {
  for (const auto& s : ns.sem()) {
    const img::SysvPerm& p = s.perm();
    in_context(describe("sem", p), [&] {
      write_sysctl("kernel/sem_next_id", std::to_string(p.id()));
      int id;
      {
        ThreadIdsAs as(p.cuid(), p.cgid());
        id = semget(p.key(), s.values_size(),
                    IPC_CREAT | IPC_EXCL | static_cast<int>(p.mode() & 0777));
      }
      if (id < 0) throw_errno(strfmt("semget of %d semaphores", s.values_size()));
      if (id != p.id()) {
        semctl(id, 0, IPC_RMID);
        throw Error(
            strfmt("semget gave id %d (the slot is taken: restore into a fresh namespace)", id));
      }
      std::vector<unsigned short> v;
      for (uint32_t x : s.values()) {
        if (x > 32767) throw Error(strfmt("semaphore value %u is out of range", x));
        v.push_back(static_cast<unsigned short>(x));
      }
      Semun arg{};
      arg.array = v.data();
      if (!v.empty() && semctl(id, 0, SETALL, arg) != 0) throw_errno("semctl(SETALL)");
      semid_ds ds{};
      arg.buf = &ds;
      if (semctl(id, 0, IPC_STAT, arg) != 0) throw_errno("semctl(IPC_STAT)");
      ds.sem_perm.uid = p.uid();
      ds.sem_perm.gid = p.gid();
      ds.sem_perm.mode = static_cast<unsigned short>(p.mode());
      if (semctl(id, 0, IPC_SET, arg) != 0) throw_errno("semctl(IPC_SET)");
    });
  }
}

}  // namespace ckpt::ipc
