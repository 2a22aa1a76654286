#include "restore/plan.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "image/crc32c.h"
#include "image/page_store.h"
#include "image/record_file.h"
#include "objects/files.h"
#include "objects/mm.h"
#include "objects/pstree.h"
#include "objects/task_core.h"
#include "sys/cpu.h"
#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt {

namespace {
void check_machine(const img::Inventory& inv) {
  utsname u{};
  uname(&u);
  if (inv.arch() != u.machine)
    throw Error(strfmt("images are for %s, this machine is %s", inv.arch().c_str(), u.machine));
  uint64_t missing = inv.xfeatures() & ~cpu::xcr0();
  if (missing)
    throw Error(strfmt("the dumped tasks use CPU features this CPU lacks (XSAVE bits %#llx)",
                       static_cast<unsigned long long>(missing)));
  std::string_view vdso = cpu::vdso_text();
  if (inv.vdso_size() != vdso.size() || inv.vdso_crc() != image::crc32c(vdso.data(), vdso.size()))
    throw Error(
        strfmt("the vDSO differs from the one of the dumping kernel (%s, this is %s): "
               "restore on the same kernel build",
               inv.kernel_release().c_str(), u.release));
}

// An incremental checkpoint needs each of its ancestors, complete, and each
// the very checkpoint its child was made on (not another one put in its
// place since).
void check_parent_chain(const image::ImageSource& src, const img::Inventory& inv) {
  if (inv.parent().empty()) return;
  std::string child = src.where();
  uint64_t want = inv.parent_id();
  std::shared_ptr<const image::ImageSource> cur = src.parent();
  for (int depth = 0; depth < 4096; depth++) {
    if (!cur)
      throw Error(
          strfmt("%s: is incremental but has no '%s' link", child.c_str(), image::kParentLink));
    if (!cur->exists(kInventoryImage))
      throw Error(strfmt("%s: its parent %s is not a complete checkpoint (no %s)", child.c_str(),
                         cur->where().c_str(), kInventoryImage));
    img::Inventory p;
    image::load_message(*cur, kInventoryImage, image::Kind::Inventory, p);
    if (p.checkpoint_id() != want)
      throw Error(strfmt("%s: its parent %s is not the checkpoint it was made on (replaced since?)",
                         child.c_str(), cur->where().c_str()));
    if (p.parent().empty()) return;
    child = cur->where();
    want = p.parent_id();
    cur = cur->parent();
  }
  throw Error(src.where() + ": chain of parent checkpoints too long (a loop?)");
}

}  // namespace

RestorePlan load_plan(const image::ImageSource& src) {
  RestorePlan plan;
  if (!src.exists(kInventoryImage))
    throw Error(strfmt("%s: no %s: not a checkpoint, or an incomplete one", src.where().c_str(),
                       kInventoryImage));
  image::load_message(src, kInventoryImage, image::Kind::Inventory, plan.inv);
  check_machine(plan.inv);
  check_parent_chain(src, plan.inv);

  std::map<uint32_t, int> index;
  for (auto& e : load_pstree(src)) {
    if (e.zombie()) {
      auto it = index.find(e.ppid());
      if (it == index.end())
        throw Error(strfmt("image %s: zombie %u has no live parent", kPstreeImage, e.pid()));
      plan.tasks[it->second].zombies.push_back(static_cast<int>(plan.zombies.size()));
      plan.zombies.push_back({e, it->second});
      continue;
    }
    PlannedTask t;
    t.entry = e;
    if (e.ppid() != 0) {
      t.parent = index.at(e.ppid());
    }
    index[e.pid()] = static_cast<int>(plan.tasks.size());
    plan.tasks.push_back(std::move(t));
  }
  for (size_t i = 1; i < plan.tasks.size(); i++)
    plan.tasks[plan.tasks[i].parent].children.push_back(static_cast<int>(i));

  for (auto& t : plan.tasks) {
    pid_t pid = t.pid();
    image::load_message(src, core_name(pid), image::Kind::Core, t.core);
    image::load_message(src, mm_name(pid), image::Kind::Mm, t.mm);
    image::load_message(src, fdtable_name(pid), image::Kind::FdTable, t.fds);
    if (t.core.threads_size() != t.entry.threads_size())
      throw Error(strfmt("image %s: %d threads, pstree says %d", core_name(pid).c_str(),
                         t.core.threads_size(), t.entry.threads_size()));
    for (int i = 0; i < t.core.threads_size(); i++) {
      const auto& th = t.core.threads(i);
      if (th.tid() != t.entry.threads(i))
        throw Error(strfmt("image %s: thread %d has tid %u, pstree says %u", core_name(pid).c_str(),
                           i, th.tid(), t.entry.threads(i)));
      if (!th.xstate().empty() && th.xstate().size() > 64 * 1024)
        throw Error(strfmt("image %s: XSAVE area too large", core_name(pid).c_str()));
    }
    // Page maps are checked against their page files now, not halfway
    // through rebuilding memory.
    image::PageReader pr(src, std::to_string(pid));
    for (const auto& v : t.mm.vmas())
      if (v.kind() == img::VMA_ANON_SHARED) image::PageReader(src, shmem_pages_id(v.shmem_id()));
  }
  return plan;
}

void wait_pids_free(const RestorePlan& plan, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::vector<const img::PstreeEntry*> entries;
  for (const auto& t : plan.tasks) entries.push_back(&t.entry);
  for (const auto& z : plan.zombies) entries.push_back(&z.entry);
  for (const auto* e : entries) {
    for (uint32_t tid : e->threads()) {
      std::string path = strfmt("/proc/%u", tid);
      while (access(path.c_str(), F_OK) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          std::string comm;
          try_read_file(path + "/comm", &comm);
          while (!comm.empty() && comm.back() == '\n') comm.pop_back();
          throw Error(
              strfmt("pid %u is in use by another process (%s); the restored tree needs "
                     "its pids back",
                     tid, comm.c_str()));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }
}

}  // namespace ckpt
