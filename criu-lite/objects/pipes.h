// Pipes and FIFOs: both ends of a pipe are descriptions with the same pipe
// id (the pipe inode); the bytes buffered in it are saved once
// (pipes-data.img), read with tee(2) so the live pipe keeps them. The kind
// itself is made by make_pipe_kind() (fd_kind.h).
#pragma once

#include "files.pb.h"

namespace ckpt {

constexpr const char* kPipeDataImage = "pipes-data.img";

// Reads what is buffered in the pipe behind read_fd without consuming it.
img::PipeData read_pipe_data(int read_fd, uint64_t pipe_id);

}  // namespace ckpt
