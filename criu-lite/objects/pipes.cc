#include "objects/pipes.h"

#include <fcntl.h>
#include <unistd.h>

#include "sys/error.h"
#include "sys/log.h"

namespace ckpt {

namespace {
// Flags that live on a pipe description and can be set after open.
constexpr uint32_t kSettable = O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME;

void fill(int wfd, const img::PipeData& d, const std::string& what) {
  if (d.capacity() && fcntl(wfd, F_SETPIPE_SZ, static_cast<int>(d.capacity())) < 0)
    throw_errno(strfmt("%s: set capacity to %u bytes", what.c_str(), d.capacity()));
  if (!d.data().empty()) write_full(wfd, d.data().data(), d.data().size(), what);
}
}  // namespace

img::PipeData read_pipe_data(int read_fd, uint64_t pipe_id) {
  img::PipeData d;
  d.set_pipe_id(pipe_id);
  int cap = fcntl(read_fd, F_GETPIPE_SZ);
  if (cap < 0) throw_errno("get pipe capacity");
  d.set_capacity(static_cast<uint32_t>(cap));
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe2");
  UniqueFd r(p[0]), w(p[1]);
  if (fcntl(w.get(), F_SETPIPE_SZ, cap) < 0) throw_errno(strfmt("grow a pipe to %d bytes", cap));
  // tee duplicates the buffers without consuming them; one call copies all
  // since our pipe has as many slots as the source.
  ssize_t n = tee(read_fd, w.get(), static_cast<size_t>(cap), SPLICE_F_NONBLOCK);
  if (n < 0 && errno != EAGAIN) throw_errno("tee pipe data");
  if (n > 0) {
    std::string buf(static_cast<size_t>(n), '\0');
    if (!read_full(r.get(), buf.data(), buf.size(), "pipe copy")) buf.clear();
    d.set_data(std::move(buf));
  }
  return d;
}

UniqueFd PipeSet::open_end(uint64_t pipe_id, uint32_t flags) {
  auto [it, fresh] = pipes_.try_emplace(pipe_id);
  Pipe& p = it->second;
  std::string what = strfmt("pipe:[%llu]", static_cast<unsigned long long>(pipe_id));
  if (fresh) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw_errno(what + ": pipe2");
    p.r.reset(fds[0]);
    p.w.reset(fds[1]);
    auto d = data_.find(pipe_id);
    if (d != data_.end()) fill(p.w.get(), d->second, what);
  }
  bool write_end = (flags & O_ACCMODE) == O_WRONLY;
  bool& used = write_end ? p.w_used : p.r_used;
  UniqueFd& end = write_end ? p.w : p.r;
  UniqueFd out;
  if (!used) {
    // The first description of each end is the one pipe2 made.
    out.reset(fcntl(end.get(), F_DUPFD_CLOEXEC, 0));
    used = true;
  } else {
    // Another description of the same end (opened through /proc/PID/fd).
    out = open_or_throw(strfmt("/proc/self/fd/%d", end.get()), flags & O_ACCMODE);
  }
  if (!out) throw_errno(what + ": dup");
  if (fcntl(out.get(), F_SETFL, flags & kSettable) != 0) throw_errno(what + ": set flags");
  return out;
}

UniqueFd PipeSet::open_fifo(const std::string& path, uint64_t pipe_id, uint32_t flags,
                            std::vector<UniqueFd>* helpers) {
  // Opening one end of a FIFO blocks until the other is open: hold it open
  // both ways first.
  if (!fifo_filled_.count(path)) {
    UniqueFd h = open_or_throw(path, O_RDWR | O_NONBLOCK);
    auto d = data_.find(pipe_id);
    if (d != data_.end()) {
      fcntl(h.get(), F_SETFL, 0);
      fill(h.get(), d->second, "fifo " + path);
    }
    helpers->push_back(std::move(h));
    fifo_filled_[path] = true;
  }
  UniqueFd out = open_or_throw(path, (flags & (O_ACCMODE | O_NONBLOCK)) | O_NONBLOCK);
  if (fcntl(out.get(), F_SETFL, flags & kSettable) != 0) throw_errno("fifo " + path + ": set flags");
  return out;
}

}  // namespace ckpt
