// Ghost files: files a process has open or mapped that have no name any
// more (deleted files, memfd). Their content is saved once per inode as page
// data ("ghost-INODE"), their metadata in ghosts.img. At restore a deleted
// file is recreated at its old path (so /proc shows the same name), opened
// and mapped by the tree, then unlinked again before the tree runs; a memfd
// is recreated with memfd_create and its seals.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "files.pb.h"
#include "image/image_io.h"
#include "objects/dump_context.h"
#include "sys/fd.h"

namespace ckpt {

constexpr const char* kGhostsImage = "ghosts.img";

class GhostDumper {
 public:
  // Saves the file behind fd (ours, any flags) once; returns its ghost id.
  // link is what /proc shows: "/path (deleted)" or "/memfd:name (deleted)".
  uint64_t add(DumpContext& ctx, int fd, const std::string& link);
  void finish(DumpContext& ctx);

 private:
  std::map<uint64_t, img::Ghost> ghosts_;
};

// True for a link that names a memfd.
bool is_memfd_link(const std::string& link);
// True for a link of a deleted file (or a memfd, which is one).
bool is_deleted_link(const std::string& link);

class GhostTable {
 public:
  GhostTable() = default;
  GhostTable(const GhostTable&) = delete;
  ~GhostTable();  // removes recreated files that are still there
  // Reads ghosts.img (none is fine) and checks every ghost's page data.
  void load(const image::ImageSource& src);
  // Recreates every ghost with its content.
  void materialize(const image::ImageSource& src);
  // A path that opens ghost id (the recreated file, or /proc/PID/fd/N of
  // ckpt's memfd).
  std::string path(uint64_t id) const;
  // Opens ghost id: a new description, with flags (works from inside the
  // tree's mount namespace too).
  UniqueFd open(uint64_t id, int flags) const;
  // ckpt's memfd of ghost id, -1 if the ghost is a file with a path.
  int memfd(uint64_t id) const;
  // Removes the recreated deleted files: every process has opened and
  // mapped what it needs.
  void unlink_all();

 private:
  struct Live {
    img::Ghost g;
    std::string path;
    UniqueFd memfd;
    bool linked = false;
  };
  std::map<uint64_t, Live> ghosts_;
};

}  // namespace ckpt
