// ckpt receive: the destination side (see migration.h for the conversation).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "container/run.h"
#include "migrate/migration.h"
#include "migrate/net_images.h"
#include "migrate/transport.h"
#include "objects/lazy_pages.h"
#include "restore/early_root.h"
#include "restore/restore.h"
#include "sys/cancel.h"
#include "sys/cgroup.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/proc.h"

namespace ckpt::migrate {

namespace {

void settle_mounts() {
  try {
    cgroup::settle_mount_namespace();
  } catch (const Error& e) {
    LOG_DEBUG("mount namespace and cgroups not settled yet: %s", e.what());
  }
}

constexpr uint64_t kPage = 4096;
// Images arrive for as long as pre-copy runs; a silence this long is a
// source that is gone.
constexpr int kIdleTimeoutMs = 600000;

// Post-copy: pages as they come from the source (pushed, or asked for by a
// fault), kept until the pager has put them everywhere.
class RemotePages : public PageSource {
 public:
  explicit RemotePages(Channel& ch) : ch_(ch) {}
  bool read(const std::string& id, uint64_t vaddr, uint64_t npages, uint8_t* dst,
            bool ask) override {
    std::lock_guard<std::mutex> lk(mu_);
    auto& sp = spaces_[id];
    for (uint64_t i = 0; i < npages; i++) {
      auto it = sp.find(vaddr + i * kPage);
      if (it == sp.end()) {
        if (ask && asked_.insert({id, vaddr + i * kPage}).second) {
          mig::Envelope e;
          auto* r = e.mutable_page_request();
          r->set_id(id);
          r->set_vaddr(vaddr + i * kPage);
          r->set_npages(static_cast<uint32_t>(npages - i));
          ch_.send(e);
        }
        return false;
      }
      std::memcpy(dst + i * kPage, it->second.chunk->data() + it->second.off, kPage);
    }
    return true;
  }
  // Keeps the pages (a fault may ask again for one the pager could not
  // place yet) and returns where they now are.
  const uint8_t* store(const std::string& id, uint64_t vaddr, std::string body) {
    auto chunk = std::make_shared<const std::string>(std::move(body));
    std::lock_guard<std::mutex> lk(mu_);
    auto& sp = spaces_[id];
    for (uint64_t off = 0; off + kPage <= chunk->size(); off += kPage)
      sp[vaddr + off] = Ref{chunk, off};
    return reinterpret_cast<const uint8_t*>(chunk->data());
  }

 private:
  struct Ref {
    std::shared_ptr<const std::string> chunk;
    uint64_t off;
  };
  Channel& ch_;
  std::mutex mu_;
  std::map<std::string, std::unordered_map<uint64_t, Ref>> spaces_;
  std::set<std::pair<std::string, uint64_t>> asked_;
};

// Reads what the source sends once the final set is in: pages (post-copy),
// its goodbye, or its giving up; the main thread restores and waits.
class PageReceiver {
 public:
  // pages: where post-copy pages are kept (nullptr in the other modes).
  PageReceiver(Channel& ch, SetReceiver& rx, RemotePages* pages, LazyPager& pager)
      : ch_(ch), rx_(rx), pages_(pages), pager_(pager) {
    thread_ = std::thread([this] { loop(); });
  }
  ~PageReceiver() { stop(); }
  void stop() {
    finished_ = true;
    if (thread_.joinable()) {
      ch_.shutdown();
      thread_.join();
    }
  }
  bool failed() const { return failed_; }
  // The source said it gave up (its tree carries on there).
  bool refused() const { return refused_; }
  // The source let its tree go: the migration is complete.
  bool bye() const { return bye_; }
  std::string error() const {
    std::lock_guard<std::mutex> lk(mu_);
    return error_;
  }

 private:
  void loop() {
    try {
      while (!finished_) {
        Frame f;
        if (!rx_.recv(ch_, f, 200)) continue;
        if (f.msg.has_page_data() && f.msg.page_data().zero()) {
          // Pages the source's task never wrote: they stay the zero page.
          const auto& d = f.msg.page_data();
          if (!f.body.empty())
            throw Error(strfmt("zero pages of %s at %#lx came with %zu bytes", d.id().c_str(),
                               d.vaddr(), f.body.size()));
          if (!pages_) throw Error("page data from the source, but this is not post-copy");
          pager_.arrived_zero(d.id(), d.vaddr(), d.npages());
        } else if (f.msg.has_page_data()) {
          const auto& d = f.msg.page_data();
          if (f.body.size() != static_cast<size_t>(d.npages()) * kPage)
            throw Error(strfmt("page data of %s at %#lx: %zu bytes for %u pages", d.id().c_str(),
                               d.vaddr(), f.body.size(), d.npages()));
          if (!pages_) throw Error("page data from the source, but this is not post-copy");
          // Stored first: a fault that reads before the pager placed them
          // finds them instead of asking again.
          const uint8_t* data = pages_->store(d.id(), d.vaddr(), std::move(f.body));
          pager_.arrived(d.id(), d.vaddr(), d.npages(), data);
        } else if (f.msg.has_fail()) {
          refused_ = true;
          throw Error("the source gave up: " + f.msg.fail().error());
        } else if (f.msg.has_control() && f.msg.control().what() == "bye") {
          bye_ = true;
          return;
        }
      }
    } catch (const Error& e) {
      if (finished_) return;
      std::lock_guard<std::mutex> lk(mu_);
      error_ = e.what();
      failed_ = true;
    }
  }
  Channel& ch_;
  SetReceiver& rx_;
  RemotePages* pages_;
  LazyPager& pager_;
  std::thread thread_;
  std::atomic<bool> finished_{false}, failed_{false}, refused_{false}, bye_{false};
  mutable std::mutex mu_;
  std::string error_;
};

// From the source's preview, while the tree still runs there: the
// container's cgroup, the tree's network namespace and its root, each if it
// can be made (the restore makes the rest, and anything the images say
// otherwise). On this thread: the root is forked while ckpt has no other.
void make_ahead(const img::TreePreview& p, const std::string& name, const NetRestoreOptions& net,
                std::optional<cgroup::Cgroup>& cg, std::optional<PreparedNetns>& netns,
                std::optional<EarlyRoot>& root) {
  if (!name.empty() && !cg) {
    try {
      cg = cgroup::Cgroup::create(name);
    } catch (const Error& e) {
      LOG_DEBUG("container %s: cgroup not made ahead: %s", name.c_str(), e.what());
    }
  }
  int netns_fd = -1;
  if (p.has_net() && !netns && PreparedNetns::accepts(p.net(), net)) {
    netns.emplace(p.net(), net);
    netns_fd = netns->fd();
  }
  if (root) return;
  std::string why = EarlyRoot::refuses(p);
  if (why.empty() && p.namespaces().net() && netns_fd < 0) why = "no network namespace made ahead";
  if (!why.empty()) {
    LOG_DEBUG("root not made ahead: %s", why.c_str());
    return;
  }
  try {
    log::StepTimer st("root, ahead of the tree");
    root.emplace(p, netns_fd, cg ? &*cg : nullptr);
  } catch (const Error& e) {
    LOG_DEBUG("root not made ahead: %s", e.what());
  }
}

// One migration, from the handshake to the tree running with all its
// memory. Throws on failure (the restore removed what it made).
std::string receive_one(Channel& ch, const ReceiveRequest& req) {
  mig::Hello hello;
  hello.set_role("destination");
  PeerInfo peer = handshake(ch, hello, req.key);
  Mode mode = parse_mode(peer.hello.mode());
  LOG_INFO("receiving from %s (%s), %s", peer.hello.hostname().c_str(), ch.peer().c_str(),
           mode_name(mode));
  SetReceiver rx(ch.peer());
  std::string name;
  // A container's cgroup, made while the source dumps its last round (a few
  // ms of mkdir the stopped tree does not wait for); removed again if the
  // restore does not take it over.
  std::optional<cgroup::Cgroup> cg_made;
  std::shared_ptr<MemSource> final;
  // The tree's network namespace, built from the copy the source sends
  // ahead of its last set (while it still dumps the tasks); the restore
  // adopts it if netns.img is the same. Declared after the cgroup: it goes
  // first (its host veth ends) if the restore does not take it.
  std::optional<PreparedNetns> netns_ahead;
  // The tree's root, made ahead in that namespace and the cgroup: after
  // both, so that it goes first.
  std::optional<EarlyRoot> early_root;
  uint32_t rounds = 0;
  while (!final) {
    Frame f;
    // Until the tree stops on the source, Ctrl-C here only ends the
    // migration (the source carries on when the connection goes).
    int idle_ms = 0;
    while (!rx.recv(ch, f, 250)) {
      cancel::check();
      idle_ms += 250;
      if (idle_ms >= kIdleTimeoutMs)
        throw Error(strfmt("nothing from %s for %d s", ch.peer().c_str(), kIdleTimeoutMs / 1000));
    }
    if (rx.feed(f)) {
      // Each set is acknowledged once in: the source starts its next round
      // (or stops the tree) only when nothing is left in the pipe.
      if (auto set = rx.take_committed()) ch.send(control("ack", set->set()));
      continue;
    }
    if (f.msg.has_fail()) throw Error("the source failed: " + f.msg.fail().error());
    if (!f.msg.has_control()) throw Error("unexpected message from " + ch.peer());
    const auto& c = f.msg.control();
    if (c.what() == "container") {
      name = c.text();
      // What a dead container of that name left here goes now, not while
      // the tree is stopped.
      container::prepare_restore(name);
      LOG_DEBUG("container %s: leftovers removed", name.c_str());
    } else if (c.what() == "stopping") {
      LOG_DEBUG("stopping: the source stops the tree now");
      // (Made ahead already if a preview came.)
      if (!name.empty() && !cg_made) {
        try {
          cg_made = cgroup::Cgroup::create(name);
        } catch (const Error& e) {
          LOG_DEBUG("container %s: cgroup not made ahead: %s", name.c_str(), e.what());
        }
      }
    } else if (c.what() == "preview") {
      img::TreePreview p;
      if (!p.ParseFromString(f.body))
        throw Error("a preview of the tree from " + ch.peer() + " that does not parse");
      // The source waits for the word before it stops the tree: what is
      // made here now is not part of the downtime.
      // Logged before anything is made: a receive killed from here on may
      // leave the cgroup (the next receive of the container removes it).
      LOG_DEBUG("preview: the source stops the tree next; making its cgroup, namespace, root");
      make_ahead(p, name, req.net, cg_made, netns_ahead, early_root);
      ch.send(control("preview-ready", c.a()));
    } else if (c.what() == "round") {
      rounds++;
      LOG_DEBUG("pre-copy round %u: set %llu, %llu pages", rounds,
                static_cast<unsigned long long>(c.a()), static_cast<unsigned long long>(c.b()));
    } else if (c.what() == "final") {
      final = rx.set(static_cast<uint32_t>(c.a()));
      if (!final)
        throw Error(
            strfmt("the final set %llu never arrived", static_cast<unsigned long long>(c.a())));
    }
  }
  LOG_DEBUG("final set %u in: restoring", final->set());
  if (!req.work_dir.empty()) final->save_to(req.work_dir);

  // Memory comes lazily either way: from the sets received (pre-copy,
  // stop-and-copy), or from the source as the tree runs (post-copy).
  std::optional<ImagePageSource> local;
  std::optional<RemotePages> remote;
  PageSource* src;
  if (mode == Mode::kPostcopy)
    src = &remote.emplace(ch);
  else
    src = &local.emplace(final);
  LazyPager pager(*src);
  PageReceiver from_source(ch, rx, remote ? &*remote : nullptr, pager);

  RestoreRequest rr;
  rr.source = final;
  rr.detach = true;
  rr.tcp_established = true;
  rr.net = req.net;
  rr.lazy = &pager;
  if (netns_ahead) rr.prepared_netns = &*netns_ahead;
  if (early_root) rr.early_root = &*early_root;
  if (!name.empty()) {
    rr.cgroup_name = name;
    if (cg_made) rr.cgroup_made = &*cg_made;
  }
  uint64_t restore_us = 0;
  rr.on_running = [&](const RestoreResult& r) {
    ch.send(control("resumed", realtime_us(), r.total_us));
    restore_us = r.total_us;
    pager.guard(r.root);
    if (!name.empty()) {
      img::ContainerState s = *r.container;
      s.set_name(name);
      container::record_restored(s, r.root, r.cgroup_paths, req.net.bridge, req.net.host_ifname);
    }
  };
  RestoreResult r;
  try {
    r = restore_tree(rr);
  } catch (const Error& e) {
    // Told before the page stream is shut down: the source then gives its
    // tree back to its own host at once.
    ch.try_send_fail(e.what());
    throw;
  }
  // Undoes this side if the source takes its tree back (it gave up waiting
  // for "resumed"), or if post-copy pages can no longer come.
  auto withdraw = [&](const std::string& why) {
    // Stop the whole tree first (no one forks meanwhile), then kill it.
    std::vector<pid_t> all{r.root};
    for (size_t i = 0; i < all.size(); i++) {
      kill(all[i], SIGSTOP);
      for (pid_t c : proc::list_children(all[i])) all.push_back(c);
    }
    for (pid_t p : all) kill(p, SIGKILL);
    if (!name.empty()) {
      try {
        container::remove_container(name, true);
      } catch (const Error& e) {
        LOG_WARN("container %s: %s", name.c_str(), e.what());
      }
    }
    throw Error(why);
  };
  // The tree runs; its memory must be complete before the source may go.
  bool pages_sent = false;
  for (;;) {
    bool done = pager.wait_done(100);
    if (from_source.refused()) withdraw(from_source.error());
    if (done && mode == Mode::kPostcopy && !pages_sent) {
      ch.send(control("pages-done"));
      pages_sent = true;
    }
    if (done && from_source.bye()) break;
    if (from_source.failed()) {
      // Without the source a post-copy tree cannot get its memory: it
      // would wait on a fault forever. Otherwise the source let it go and
      // only its goodbye was lost.
      if (!done)
        withdraw("post-copy: lost the source before every page arrived: " + from_source.error());
      LOG_WARN("no goodbye from %s (%s); the tree runs here", ch.peer().c_str(),
               from_source.error().c_str());
      break;
    }
  }
  from_source.stop();
  LazyStats st = pager.stats();
  return strfmt(
      "received %s%s from %s: %u tasks, %llu pages; running after a %.1f ms restore; %llu "
      "faults served, %llu pages filled behind",
      name.empty() ? "a tree" : "container ", name.c_str(), ch.peer().c_str(), r.tasks,
      static_cast<unsigned long long>(r.pages), static_cast<double>(restore_us) / 1e3,
      static_cast<unsigned long long>(st.faults), static_cast<unsigned long long>(st.filled));
}

}  // namespace

int receive(const ReceiveRequest& req) {
  // Restores start from this process's mount namespace and cgroup mounts:
  // settle them now, while ckpt has one thread (setns into a mount
  // namespace is refused to a process with threads, and the restore would
  // mount cgroups of its own, ~7 ms of the downtime) and before a container
  // waits for them.
  settle_mounts();
  Listener l = Listener::bind(req.listen);
  LOG_INFO("listening on %s", l.address().c_str());
  int rc = 0;
  do {
    Channel ch = l.accept(-1);
    try {
      std::string summary = receive_one(ch, req);
      if (req.on_done) req.on_done(summary);
      rc = 0;
    } catch (const Error& e) {
      LOG_ERROR("migration from %s failed: %s", ch.peer().c_str(), e.what());
      ch.try_send_fail(e.what());
      rc = 1;
    }
  } while (!req.once);
  return rc;
}

}  // namespace ckpt::migrate
