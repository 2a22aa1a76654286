// Open files: every file description of the tree is saved once
// (files.img), and each process's fd table (fdtable-PID.img) says which
// fd refers to which description, so dup()'d fds and fds inherited by a
// child share one description (offset, flags) again after restore.
// What each kind of file saves is in its own file (fd_kind.h); anything no
// kind recognizes stops the dump with its pid, fd and kind named.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "files.pb.h"
#include "image/image_io.h"
#include "objects/dump_context.h"
#include "objects/fd_kind.h"
#include "sys/fd.h"

namespace ckpt {

inline std::string fdtable_name(pid_t pid) {
  return "fdtable-" + std::to_string(pid) + ".img";
}
constexpr const char* kFilesImage = "files.img";

// Collects the descriptions while the tasks are walked, then saves them.
class FileDumper {
 public:
  FileDumper();
  // Saves fdtable-PID.img; records new descriptions.
  void dump_task(DumpContext& ctx, DumpTask& t);
  // Lets each kind save what it keeps for all descriptions (pipe data,
  // socket peers), then saves files.img.
  void finish(DumpContext& ctx);

 private:
  struct Desc {
    UniqueFd local;  // our duplicate (pidfd_getfd)
    dev_t dev;
    ino_t ino;
    img::FileDesc img;
  };
  uint32_t find_or_add(DumpContext& ctx, DumpTask& t, int fd, UniqueFd local,
                       const proc::FdInfo& info);
  std::vector<std::unique_ptr<FdKind>> kinds_;
  std::vector<Desc> descs_;
  std::map<std::pair<dev_t, ino_t>, std::vector<size_t>> by_inode_;  // indexes into descs_
};

// Restore: opens every description once in the controller (the holder);
// each restore stub takes the ones its table names with pidfd_getfd and puts
// them at their numbers. The stubs are forked before the descriptions are
// opened (so namespaces can be set up first, and no stub copies the whole
// tree's descriptions): the controller tells them its fd numbers through a
// table in shared memory, mapped by load() before the fork.
class FileTable {
 public:
  FileTable();
  ~FileTable();
  FileTable(const FileTable&) = delete;
  FileTable& operator=(const FileTable&) = delete;
  // Reads and checks files.img and every kind's images; creates nothing.
  void load(const image::ImageSource& src);
  // tree_pids: files under /proc/PID of a restored process can only be
  // opened once that process exists (the stub opens those).
  void open_all(const std::vector<img::FdTable>& tables, const std::vector<pid_t>& tree_pids,
                const GhostTable* ghosts);
  // Before open_all (in the tree's namespaces too): opens at once the
  // descriptions pick selects, which ckpt needs while the stubs are forked
  // (the pty masters of controlling terminals, objects/tty.h); open_all
  // keeps them. Returns the holder's fd of each, by description id.
  std::map<uint32_t, int> open_early(const std::function<bool(const img::FileDesc&)>& pick);
  // Before the stubs are forked: RLIMIT_NOFILE high enough for every fd
  // number of the tree and every description (the stubs inherit it).
  void reserve(const std::vector<img::FdTable>& tables);
  // In a restore stub, after open_all ran in the holder: installs the task's
  // fd table from the holder's descriptions (holder_pidfd), closes every
  // other fd, then lets the kinds finish (epoll watches). The pidfd stays
  // open at holder_fd_number(table) for the rest of the restore (the
  // controller closes it last).
  void install(const img::FdTable& table, int holder_pidfd) const;
  static int holder_fd_number(const img::FdTable& table);
  // Before the stubs are forked: why installing table needs a kind's code in
  // the stub (FdKind::runs_in_stub), as "fd N: kind", or "" if it does not.
  std::string runs_in_stub(const img::FdTable& table, const std::vector<pid_t>& tree_pids) const;
  // After open_all: the holder's fd of description id (what install takes
  // with pidfd_getfd); negative if the process opens it itself.
  int holder_fd(uint32_t id) const { return slot_of(id); }
  // Drops the helper fds that kept FIFOs open while the table was built.
  void close_helpers() { st_.helpers.clear(); }
  // Right before the tree runs: each kind's last step (TCP repair off).
  void before_resume();

 private:
  const FdKind& kind_of(const img::FileDesc& d) const;
  void open_one(uint32_t id, const img::FileDesc& d);
  std::vector<std::unique_ptr<FdKind>> kinds_;
  FdRestoreState st_;
  // Shared with the stubs: the holder's fd of each description (by the
  // index of its id in st_.descs), kDeferred for those the stub opens.
  static constexpr int kNotOpen = -1, kDeferred = -2;
  int slot_of(uint32_t id) const;
  std::map<uint32_t, int> slot_index_;
  int* slots_ = nullptr;
  size_t slots_size_ = 0;
  std::map<uint32_t, UniqueFd> fds_;  // description id -> our fd
  int base_ = 0;
};

}  // namespace ckpt
