#include "objects/pipes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "image/record_file.h"
#include "objects/fd_kind.h"
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

uint64_t pipe_id_of(const img::FileDesc& d) {
  return d.has_pipe() ? d.pipe().pipe_id() : d.fifo().pipe_id();
}

class PipeKind : public FdKind {
 public:
  const char* name() const override { return "pipe"; }
  bool matches(const FdProbe& p) const override { return S_ISFIFO(p.st.st_mode); }
  void dump(const FdDumpArgs& a, img::FileDesc* d) override {
    if (a.link.rfind("pipe:", 0) == 0) {
      d->mutable_pipe()->set_pipe_id(a.st.st_ino);
    } else {
      auto* f = d->mutable_fifo();
      f->set_path(a.link);
      f->set_pipe_id(a.st.st_ino);
    }
    if (owner_.find(a.st.st_ino) == owner_.end())
      owner_[a.st.st_ino] = strfmt("pid %d fd %d", a.task.pid, a.fd);
  }

  void finish_dump(DumpContext& ctx,
                   const std::vector<std::pair<const img::FileDesc*, int>>& descs) override {
    // pipe id -> which ends the tree holds, and a description to read from.
    struct Ends {
      bool r = false, w = false, fifo = false;
      int read_fd = -1;
    };
    std::map<uint64_t, Ends> ends;
    for (auto& [d, local] : descs) {
      if (!d->has_pipe() && !d->has_fifo()) continue;
      Ends& e = ends[pipe_id_of(*d)];
      e.fifo = d->has_fifo();
      uint32_t acc = d->flags() & O_ACCMODE;
      if (acc == O_RDONLY || acc == O_RDWR) {
        e.r = true;
        e.read_fd = local;
      }
      if (acc == O_WRONLY || acc == O_RDWR) e.w = true;
    }
    image::RecordWriter w(kPipeDataImage, image::Kind::PipeData);
    for (auto& [id, e] : ends) {
      if (!e.fifo && (!e.r || !e.w))
        throw Error(strfmt(
            "%s: pipe:[%llu] has its %s end outside the dumped tree; "
            "dump the process at the other end too",
            owner_[id].c_str(), static_cast<unsigned long long>(id), e.r ? "write" : "read"));
      if (e.read_fd < 0) continue;
      img::PipeData pd = in_context(owner_[id], [&] { return read_pipe_data(e.read_fd, id); });
      if (!pd.data().empty() || pd.capacity() != 65536) w.add(pd);
    }
    w.save(*ctx.sink);
  }

  bool owns(const img::FileDesc& d) const override { return d.has_pipe() || d.has_fifo(); }

  void load(const image::ImageSource& src) override {
    image::RecordReader r(src, kPipeDataImage, image::Kind::PipeData);
    img::PipeData pd;
    while (r.next(pd)) data_[pd.pipe_id()] = pd;
  }

  UniqueFd open(const img::FileDesc& d, FdRestoreState& st) override {
    uint32_t flags = d.flags() & ~static_cast<uint32_t>(O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC);
    if (d.has_fifo()) return open_fifo(d.fifo().path(), d.fifo().pipe_id(), flags, st);
    return open_end(d.pipe().pipe_id(), flags);
  }

 private:
  // A new description for the given end of pipe pipe_id, with flags.
  UniqueFd open_end(uint64_t pipe_id, uint32_t flags) {
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
      out = reopen_fd(end.get(), flags & O_ACCMODE);
    }
    if (!out) throw_errno(what + ": dup");
    if (fcntl(out.get(), F_SETFL, flags & kSettable) != 0) throw_errno(what + ": set flags");
    return out;
  }

  // Opening one end of a FIFO blocks until the other is open: it is held
  // open both ways first, by a helper fd kept until every file is open.
  UniqueFd open_fifo(const std::string& path, uint64_t pipe_id, uint32_t flags,
                     FdRestoreState& st) {
    if (!fifo_filled_.count(path)) {
      UniqueFd h = open_or_throw(path, O_RDWR | O_NONBLOCK);
      auto d = data_.find(pipe_id);
      if (d != data_.end()) {
        fcntl(h.get(), F_SETFL, 0);
        fill(h.get(), d->second, "fifo " + path);
      }
      st.helpers.push_back(std::move(h));
      fifo_filled_[path] = true;
    }
    UniqueFd out = open_or_throw(path, (flags & (O_ACCMODE | O_NONBLOCK)) | O_NONBLOCK);
    if (fcntl(out.get(), F_SETFL, flags & kSettable) != 0)
      throw_errno("fifo " + path + ": set flags");
    return out;
  }

  struct Pipe {
    UniqueFd r, w;
    bool r_used = false, w_used = false;
  };
  std::map<uint64_t, std::string> owner_;  // pipe id -> "pid P fd N", for messages
  std::map<uint64_t, Pipe> pipes_;
  std::map<uint64_t, img::PipeData> data_;
  std::map<std::string, bool> fifo_filled_;
};

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

std::unique_ptr<FdKind> make_pipe_kind() {
  return std::make_unique<PipeKind>();
}

}  // namespace ckpt
