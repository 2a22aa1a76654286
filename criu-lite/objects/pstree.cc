#include "objects/pstree.h"

#include <set>

#include "image/record_file.h"
#include "objects/tty.h"
#include "sys/error.h"

namespace ckpt {

void dump_pstree(DumpContext& ctx) {
  image::RecordWriter w(kPstreeImage, image::Kind::Pstree);
  std::set<pid_t> pids;
  for (auto& t : ctx.tasks) pids.insert(t->pid);
  for (auto& z : ctx.zombies) pids.insert(z.pid);
  for (auto& t : ctx.tasks) {
    img::PstreeEntry e;
    // Ids as the tree sees them (inside its pid namespace, if it has one).
    e.set_pid(static_cast<uint32_t>(t->vpid));
    e.set_ppid(static_cast<uint32_t>(t->ppid ? ctx.vpid(t->ppid) : 0));
    e.set_pgid(static_cast<uint32_t>(ctx.own_pidns ? ctx.vpid(t->stat.pgrp) : t->stat.pgrp));
    e.set_sid(static_cast<uint32_t>(ctx.own_pidns ? ctx.vpid(t->stat.session) : t->stat.session));
    for (pid_t tid : t->vtids) e.add_threads(static_cast<uint32_t>(tid));
    // A session or group whose leader is outside the tree can only be
    // joined again with --shell-job (the restoring shell's own).
    bool sid_in = pids.count(t->stat.session) != 0;
    bool pgid_in = pids.count(t->stat.pgrp) != 0;
    if ((!sid_in || !pgid_in) && !ctx.opts.shell_job) {
      // A job started from a shell: name its terminal too.
      std::string tty =
          t->stat.tty_nr ? " (controlling terminal " + tty_name(decode_tty_nr(t->stat.tty_nr)) + ")"
                         : "";
      if (t->ppid == 0)
        throw Error(
            strfmt("pid %d: its %s leader (%d) is outside the tree%s: start it with setsid, "
                   "or dump with --shell-job",
                   t->pid, sid_in ? "process group" : "session",
                   sid_in ? t->stat.pgrp : t->stat.session, tty.c_str()));
      throw Error(strfmt("pid %d: its %s leader (%d) is not in the dumped tree", t->pid,
                         sid_in ? "process group" : "session",
                         sid_in ? t->stat.pgrp : t->stat.session));
    }
    w.add(e);
  }
  // Zombies last: their parents (live tasks) come before them.
  for (auto& z : ctx.zombies) {
    if (!pids.count(z.pgid) || !pids.count(z.sid))
      throw Error(
          strfmt("zombie %d: its process group or session leader is not in the tree", z.pid));
    img::PstreeEntry e;
    e.set_pid(static_cast<uint32_t>(ctx.vpid(z.pid)));
    e.set_ppid(static_cast<uint32_t>(ctx.vpid(z.ppid)));
    e.set_pgid(static_cast<uint32_t>(ctx.vpid(z.pgid)));
    e.set_sid(static_cast<uint32_t>(ctx.vpid(z.sid)));
    e.add_threads(static_cast<uint32_t>(ctx.vpid(z.pid)));
    e.set_zombie(true);
    e.set_exit_status(z.exit_status);
    w.add(e);
  }
  w.save(*ctx.sink);
}

std::vector<img::PstreeEntry> load_pstree(const image::ImageSource& src) {
  image::RecordReader r(src, kPstreeImage, image::Kind::Pstree);
  std::vector<img::PstreeEntry> out;
  std::set<uint32_t> seen;
  img::PstreeEntry e;
  while (r.next(e)) {
    if (e.pid() == 0 || e.threads_size() == 0 || e.threads(0) != e.pid())
      throw Error(strfmt("image %s: entry %zu is malformed", kPstreeImage, out.size()));
    if (out.empty() ? e.ppid() != 0 : !seen.count(e.ppid()))
      throw Error(
          strfmt("image %s: pid %u comes before its parent %u", kPstreeImage, e.pid(), e.ppid()));
    if (!seen.insert(e.pid()).second)
      throw Error(strfmt("image %s: pid %u appears twice", kPstreeImage, e.pid()));
    out.push_back(e);
  }
  if (out.empty()) throw Error(strfmt("image %s: no processes", kPstreeImage));
  return out;
}

}  // namespace ckpt
