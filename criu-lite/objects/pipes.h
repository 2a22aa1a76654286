// Pipes and FIFOs: both ends of a pipe are descriptions with the same pipe
// id (the pipe inode); the bytes buffered in it are saved once, read with
// tee(2) so the live pipe keeps them.
#pragma once

#include <map>
#include <vector>

#include "files.pb.h"
#include "sys/fd.h"

namespace ckpt {

// Reads what is buffered in the pipe behind read_fd without consuming it.
img::PipeData read_pipe_data(int read_fd, uint64_t pipe_id);

// Restore: the pipes of the tree, created once per pipe id.
class PipeSet {
 public:
  explicit PipeSet(std::map<uint64_t, img::PipeData> data) : data_(std::move(data)) {}
  // A new description for the given end of pipe pipe_id, with flags.
  UniqueFd open_end(uint64_t pipe_id, uint32_t flags);
  // A FIFO description: opened without blocking through a helper that holds
  // the FIFO open for reading and writing until close_helpers().
  UniqueFd open_fifo(const std::string& path, uint64_t pipe_id, uint32_t flags,
                     std::vector<UniqueFd>* helpers);

 private:
  struct Pipe {
    UniqueFd r, w;
    bool r_used = false, w_used = false;
  };
  std::map<uint64_t, Pipe> pipes_;
  std::map<uint64_t, img::PipeData> data_;
  std::map<std::string, bool> fifo_filled_;
};

}  // namespace ckpt
