// The checkpoint directory of a job (ckpt job run --checkpoint-dir DIR):
//
//   DIR/ckpt-000007/          a complete checkpoint (an image directory)
//   DIR/ckpt-000008/parent -> ../ckpt-000007   (an incremental one)
//   DIR/latest -> ckpt-000008 the newest, replaced atomically
//   DIR/.partial-ckpt-000009/ being written: never restored, removed at start
//   DIR/.removing-ckpt-000003/ being deleted: never restored, removed at start
//   DIR/.lock                 flock()ed by the one supervisor using DIR
//
// A checkpoint is written under its .partial- name, its files and directory
// fsync()ed by the dump, then renamed to its final name and DIR fsync()ed:
// a name without the dot always holds a complete checkpoint, after a crash
// too. Deleting goes the other way (rename first, then remove the files).
// Only relative links are used, so DIR can move to another node whole.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sys/fd.h"

namespace ckpt::job {

struct CheckpointInfo {
  std::string name;  // "ckpt-000007"
  uint64_t seq = 0;
  bool complete = false;  // has its inventory
  std::string parent;     // name of the parent, "" for a full checkpoint
  uint64_t checkpoint_id = 0, parent_id = 0;
  uint64_t time_unix = 0;
  uint64_t bytes = 0;  // of its files
  uint64_t pages = 0, parent_pages = 0;
  uint32_t tasks = 0;
  uint64_t frozen_us = 0;
};

class CheckpointDir {
 public:
  // Opens DIR (created if missing). With lock, takes DIR/.lock or throws
  // naming the directory: two supervisors must never share one.
  CheckpointDir(std::string dir, bool lock);

  const std::string& dir() const { return dir_; }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  // Leftovers of interrupted writes and removals.
  std::vector<std::string> leftovers() const;
  void remove_leftovers();

  // Every checkpoint (named ckpt-N, complete or not), oldest first.
  std::vector<CheckpointInfo> list() const;
  // The target of DIR/latest, "" if none.
  std::string latest() const;
  // Complete checkpoints whose whole parent chain is complete and
  // consistent, newest first: the ones a job can resume from.
  std::vector<std::string> restorable() const;
  // Links from name up to its full checkpoint (0 for a full one).
  int depth(const std::string& name) const;

  // A new checkpoint: write it into partial (a directory in DIR), then
  // publish() it under name.
  struct Pending {
    std::string name, partial;
  };
  Pending begin();
  void publish(const Pending& p);
  void abandon(const Pending& p);

  // Deletes all but the newest keep checkpoints and the ones they (and
  // latest) need as parents.
  std::vector<std::string> prune(size_t keep);
  // Deletes every checkpoint and the latest link (the job has finished).
  void remove_all();

 private:
  CheckpointInfo info(const std::string& name) const;
  bool chain_ok(const std::string& name) const;
  void remove(const std::string& name);
  void sync_dir() const;
  std::string dir_;
  UniqueFd dirfd_;
  UniqueFd lock_;
};

// "ckpt-000007" -> 7; 0 if name is not a checkpoint name.
uint64_t checkpoint_seq(const std::string& name);
std::string checkpoint_name(uint64_t seq);

}  // namespace ckpt::job
