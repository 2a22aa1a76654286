// Open files: every file description of the tree is saved once
// (files.img), and each process's fd table (fdtable-PID.img) says which
// fd refers to which description, so dup()'d fds and fds inherited by a
// child share one description (offset, flags) again after restore.
// Kinds here: regular files and directories, character devices; pipes and
// FIFOs are in pipes.h. Anything else stops the dump with its pid, fd and
// kind named.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "files.pb.h"
#include "image/image_io.h"
#include "objects/dump_context.h"
#include "sys/fd.h"

namespace ckpt {

inline std::string fdtable_name(pid_t pid) { return "fdtable-" + std::to_string(pid) + ".img"; }
constexpr const char* kFilesImage = "files.img";
constexpr const char* kPipeDataImage = "pipes-data.img";

// Collects the descriptions while the tasks are walked, then saves them.
class FileDumper {
 public:
  // Saves fdtable-PID.img; records new descriptions.
  void dump_task(DumpContext& ctx, DumpTask& t);
  // Saves files.img and pipes-data.img; checks every pipe has both ends in
  // the tree.
  void finish(DumpContext& ctx);

 private:
  struct Desc {
    UniqueFd local;  // our duplicate (pidfd_getfd)
    dev_t dev;
    ino_t ino;
    img::FileDesc img;
    std::string owner;  // "pid P fd N" of the first fd seen, for messages
  };
  uint32_t find_or_add(pid_t pid, int fd, UniqueFd local);
  std::vector<Desc> descs_;
};

// Restore: opens every description once in the controller at fds above
// every fd number the tree uses; restore stubs (forks of the controller)
// inherit them and dup them to their numbers.
class FileTable {
 public:
  // tree_pids: files under /proc/PID of a restored process can only be
  // opened once that process exists; those are opened by install().
  void open_all(const image::ImageSource& src, const std::vector<img::FdTable>& tables,
                const std::vector<pid_t>& tree_pids);
  // In a restore stub: installs the task's fd table and closes every other fd.
  void install(const img::FdTable& table) const;
  // Drops the helper fds that kept FIFOs open while the table was built.
  void close_helpers() { helpers_.clear(); }

 private:
  std::map<uint32_t, UniqueFd> fds_;  // description id -> our fd
  std::map<uint32_t, img::FileDesc> deferred_;  // /proc/PID files of the tree
  std::vector<UniqueFd> helpers_;
  int base_ = 0;
};

}  // namespace ckpt
