// ckpt migrate: the source side (see migration.h for the conversation).

#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <thread>

#include "container/run.h"
#include "container/state.h"
#include "dump/dump.h"
#include "image/page_store.h"
#include "image/record_file.h"
#include "migrate/migration.h"
#include "migrate/net_images.h"
#include "migrate/transport.h"
#include "objects/dirty_tracking.h"
#include "objects/mm.h"
#include "objects/netns.h"
#include "sys/error.h"
#include "sys/log.h"
#include "sys/remote.h"

namespace ckpt::migrate {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kPushPages = 64;  // one PageData frame pushed
// How long the destination may take to restore before the source gives up
// and lets its tree carry on.
constexpr int kResumeTimeoutMs = 120000;

uint64_t us_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

// Images held in memory on the source: the pagemaps of a post-copy dump,
// whose lazy runs are the pages still to send.
class LocalImages : public image::ImageSource {
 public:
  std::map<std::string, std::shared_ptr<const image::Blob>> images;
  std::shared_ptr<const image::Blob> open(const std::string& name) const override {
    auto it = images.find(name);
    if (it == images.end()) throw Error(name + ": no such image");
    return it->second;
  }
  bool exists(const std::string& name) const override { return images.count(name) > 0; }
  std::string where() const override { return "the post-copy dump"; }
};

// Sends every image on and keeps a copy of the pagemaps.
class KeepPagemaps : public image::ImageSink {
 public:
  KeepPagemaps(image::ImageSink& out, LocalImages& keep) : out_(out), keep_(keep) {}
  void put(const std::string& name, const void* data, size_t len) override {
    out_.put(name, data, len);
    if (name.rfind("pagemap-", 0) == 0)
      keep_.images[name] = image::make_blob(std::string(static_cast<const char*>(data), len));
  }
  std::unique_ptr<image::StreamWriter> open_stream(const std::string& name) override {
    return out_.open_stream(name);
  }
  void commit() override { out_.commit(); }

 private:
  image::ImageSink& out_;
  LocalImages& keep_;
};

// Where one round's images go: on the wire as set `set` (built on the set
// before it), with a copy of its pagemaps kept here.
struct RoundSink {
  RoundSink(Channel& ch, uint32_t set)
      : net(ch, set, set > 1 ? std::optional<uint32_t>(set - 1) : std::nullopt), keep(net, maps) {}
  NetSink net;
  LocalImages maps;
  KeepPagemaps keep;
};

// Which pages the previous round holds, per task: every run of its
// pagemaps (runs in its own parent included), to check what dirty tracking
// calls clean against.
class Coverage {
 public:
  void load(const LocalImages& maps) {
    runs_.clear();
    for (const auto& [name, blob] : maps.images) {
      std::string id = name.substr(8, name.size() - 8 - 4);  // pagemap-ID.img
      if (id.empty() || id.find_first_not_of("0123456789") != std::string::npos) continue;
      img::Pagemap pm;
      image::load_message(maps, name, image::Kind::Pagemap, pm);
      auto& v = runs_[static_cast<pid_t>(std::stol(id))];
      for (const auto& r : pm.runs())
        if (!r.lazy()) v.push_back({r.vaddr(), r.vaddr() + r.nr_pages() * kPage});
    }
  }
  bool covers(pid_t vpid, uint64_t vaddr, uint64_t npages) const {
    auto it = runs_.find(vpid);
    if (it == runs_.end()) return false;
    const auto& v = it->second;
    uint64_t at = vaddr, end = vaddr + npages * kPage;
    auto r = std::upper_bound(
        v.begin(), v.end(), at,
        [](uint64_t a, const std::pair<uint64_t, uint64_t>& x) { return a < x.first; });
    if (r != v.begin()) --r;
    for (; r != v.end() && at < end; ++r) {
      if (r->second <= at) continue;
      if (r->first > at) return false;
      at = r->second;
    }
    return at >= end;
  }

 private:
  std::map<pid_t, std::vector<std::pair<uint64_t, uint64_t>>> runs_;
};

// Post-copy: the stopped tree's private memory, sent on request and pushed
// in address order behind (the progress bar follows the push: it goes
// through every page). The images mark whole mappings lazy; which of their
// pages the task wrote is found here, once "final" is out (while the
// destination restores): the rest is sent as "zero" (no body), first.
class PageServer {
 public:
  PageServer(Channel& ch, const DumpContext& ctx, const LocalImages& maps, Progress* progress)
      : ch_(ch), progress_(progress) {
    for (const auto& t : ctx.tasks) {
      std::string id = std::to_string(t->vpid);
      std::string name = image::pagemap_name(id);
      if (!maps.exists(name)) continue;
      img::Pagemap pm;
      image::load_message(maps, name, image::Kind::Pagemap, pm);
      Space sp{t->pid, {}, {}};
      UniqueFd pagemap = open_or_throw(strfmt("/proc/%d/pagemap", t->pid), O_RDONLY);
      for (const auto& r : pm.runs()) {
        if (!r.lazy()) continue;
        uint64_t at = r.vaddr(), end = r.vaddr() + r.nr_pages() * kPage;
        anon_pages_written(pagemap.get(), at, end, [&](uint64_t start, uint64_t n) {
          if (start > at) sp.zeros.push_back({at, (start - at) / kPage});
          sp.runs.push_back({start, n});
          total_ += n;
          at = start + n * kPage;
        });
        if (at < end) sp.zeros.push_back({at, (end - at) / kPage});
      }
      spaces_[id] = std::move(sp);
    }
  }
  ~PageServer() { stop(); }
  uint64_t total() const { return total_; }
  uint64_t pushed() const { return pushed_; }
  uint64_t requested() const { return requested_; }

  void serve(const mig::PageRequest& rq) {
    auto it = spaces_.find(rq.id());
    if (it == spaces_.end()) throw Error("the destination asked for pages of unknown " + rq.id());
    const Space& sp = it->second;
    uint64_t n = std::min<uint64_t>(rq.npages(), 256);
    uint64_t at = rq.vaddr(), end = at + n * kPage;
    // The written runs in the range go as pages, the gaps as zero.
    auto r = std::upper_bound(sp.runs.begin(), sp.runs.end(), at,
                              [](uint64_t a, const Run& x) { return a < x.first; });
    if (r != sp.runs.begin()) --r;
    for (; r != sp.runs.end() && at < end; ++r) {
      uint64_t rs = r->first, re = r->first + r->second * kPage;
      if (re <= at) continue;
      if (rs >= end) break;
      if (rs > at) send_zero(rq.id(), at, (rs - at) / kPage, rq.tag());
      uint64_t from = std::max(at, rs), to = std::min(end, re);
      send(rq.id(), sp.pid, from, (to - from) / kPage, rq.tag());
      requested_ += (to - from) / kPage;
      at = to;
    }
    if (at < end) send_zero(rq.id(), at, (end - at) / kPage, rq.tag());
  }
  void start_push() {
    if (progress_) progress_->start("post-copy", total_);
    pusher_ = std::thread([this] {
      try {
        // Zero first: a tiny frame each, and faults there need not wait.
        for (const auto& [id, sp] : spaces_)
          for (const auto& [vaddr, npages] : sp.zeros)
            if (!stop_) send_zero(id, vaddr, npages, 0);
        for (const auto& [id, sp] : spaces_)
          for (const auto& [vaddr, npages] : sp.runs)
            for (uint64_t i = 0; i < npages && !stop_; i += kPushPages) {
              uint64_t n = std::min(kPushPages, npages - i);
              send(id, sp.pid, vaddr + i * kPage, n, 0);
              pushed_ += n;
              if (progress_) progress_->advance(n);
            }
      } catch (const Error& e) {
        // The connection is gone: the main thread sees it too.
        LOG_DEBUG("post-copy push stopped: %s", e.what());
      }
    });
  }
  void stop() {
    stop_ = true;
    if (!pusher_.joinable()) return;
    pusher_.join();
    if (progress_) progress_->finish();
  }

 private:
  using Run = std::pair<uint64_t, uint64_t>;  // vaddr, pages
  struct Space {
    pid_t pid;
    std::vector<Run> runs;   // written: sent as pages, sorted
    std::vector<Run> zeros;  // the rest of the lazy runs
  };
  void send(const std::string& id, pid_t pid, uint64_t vaddr, uint64_t n, uint64_t tag) {
    // One buffer per thread (the pusher's and the request server's), kept:
    // fresh memory per frame costs page faults on every frame here.
    thread_local std::vector<uint8_t> buf;
    buf.resize(n * kPage);
    remote_read(pid, vaddr, buf.data(), buf.size());
    mig::Envelope e;
    auto* d = e.mutable_page_data();
    d->set_id(id);
    d->set_vaddr(vaddr);
    d->set_npages(static_cast<uint32_t>(n));
    d->set_tag(tag);
    ch_.send(e, buf.data(), buf.size());
  }
  void send_zero(const std::string& id, uint64_t vaddr, uint64_t n, uint64_t tag) {
    mig::Envelope e;
    auto* d = e.mutable_page_data();
    d->set_id(id);
    d->set_vaddr(vaddr);
    d->set_npages(static_cast<uint32_t>(std::min<uint64_t>(n, UINT32_MAX)));
    d->set_tag(tag);
    d->set_zero(true);
    ch_.send(e);
    // (A gap of 2^32 pages or more is sent in pieces.)
    if (n > UINT32_MAX) send_zero(id, vaddr + uint64_t{UINT32_MAX} * kPage, n - UINT32_MAX, tag);
  }
  Channel& ch_;
  Progress* progress_;  // touched by the pusher only, between start and finish
  std::map<std::string, Space> spaces_;
  uint64_t total_ = 0;
  std::atomic<uint64_t> pushed_{0}, requested_{0};
  std::atomic<bool> stop_{false};
  std::thread pusher_;
};

// One round's line of the table; wire_bytes: what it put on the wire.
RoundStats round_stats(const DumpResult& d, uint32_t round, uint64_t wire_bytes, uint64_t us) {
  RoundStats rs;
  rs.round = round;
  rs.pages = d.stats.pages;
  rs.raw_bytes = d.stats.pages * kPage;
  rs.stored_bytes = d.stats.page_bytes;
  rs.bytes = wire_bytes;
  rs.us = us;
  rs.frozen_us = d.frozen_us;
  return rs;
}

// Waits until the destination has the whole set: what the next round
// measures and what the stopped tree waits for is then only its own data.
// Waits up to timeout_ms for the control message `what` about set; a
// failure of the destination throws. Between rounds nothing else is due.
bool wait_control(Channel& ch, const char* what, uint32_t set, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    Frame f;
    if (left.count() <= 0 || !ch.recv(f, static_cast<int>(left.count()))) return false;
    if (f.msg.has_fail()) throw Error("the destination failed: " + f.msg.fail().error());
    if (f.msg.has_control() && f.msg.control().what() == what && f.msg.control().a() == set)
      return true;
  }
}

void wait_ack(Channel& ch, uint32_t set) {
  if (!wait_control(ch, "ack", set, 60000))
    throw Error(strfmt("%s did not take set %u within 60 s", ch.peer().c_str(), set));
}

}  // namespace

Mode parse_mode(const std::string& s) {
  if (s == "precopy" || s == "pre-copy") return Mode::kPrecopy;
  if (s == "postcopy" || s == "post-copy") return Mode::kPostcopy;
  if (s == "stop-and-copy") return Mode::kStopAndCopy;
  throw Error("unknown migration mode '" + s + "' (precopy, postcopy or stop-and-copy)");
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::kPrecopy:
      return "precopy";
    case Mode::kPostcopy:
      return "postcopy";
    case Mode::kStopAndCopy:
      return "stop-and-copy";
  }
  return "?";
}

MigrateResult migrate(const MigrateRequest& req) {
  auto t0 = Clock::now();
  MigrateResult res;
  DumpRequest base;
  base.opts.tcp_established = true;  // a live service keeps its clients
  base.opts.zstd_level = req.zstd_level;
  std::optional<img::ContainerState> ct;
  if (!req.container.empty()) {
    img::ContainerState s = container::load_state(req.container);
    if (!container::init_alive(s)) throw Error("container " + req.container + " is not running");
    base.pid = s.init_pid();
    base.cgroup_paths.assign(s.cgroup_paths().begin(), s.cgroup_paths().end());
    base.save_cgroup = true;
    base.container = s;
    ct = s;
  } else {
    base.pid = req.pid;
  }

  Channel ch = Channel::connect(req.to, 10000);
  mig::Hello hello;
  hello.set_role("source");
  hello.set_mode(mode_name(req.mode));
  PeerInfo peer = handshake(ch, hello, req.key);
  res.peer = ch.peer();
  LOG_INFO("migrating %s to %s (%s), %s",
           ct ? ("container " + req.container).c_str() : strfmt("pid %d", base.pid).c_str(),
           peer.hello.hostname().c_str(), ch.peer().c_str(), mode_name(req.mode));
  if (ct) ch.send(control("container", 0, 0, req.container));
  // What the final round would otherwise do first, with the tree stopped.
  prepare_netns_dump();

  DirtyTrackers trackers;
  Coverage covered;
  uint32_t set = 0;
  uint64_t parent_id = 0;
  // A round after the first builds on the set before it, already at the
  // destination: dirty tracking says what changed, its pagemaps what it has.
  auto build_on_previous = [&](DumpRequest& r) {
    if (set <= 1) return;
    r.trackers = &trackers;
    r.parent_name = strfmt("migration set %u", set - 1);
    r.parent_id = parent_id;
    r.parent_covers = [&](pid_t p, uint64_t a, uint64_t n) { return covered.covers(p, a, n); };
  };
  if (req.mode == Mode::kPrecopy) {
    uint64_t prev_pages = UINT64_MAX;
    for (int round = 0; round < req.max_rounds; round++) {
      set++;
      RoundSink out(ch, set);
      DumpRequest r = base;
      r.sink = &out.keep;
      r.trackers = &trackers;
      // The tree stops only to (re)arm tracking; its pages are copied as it
      // runs on.
      r.opts.pages_only = true;
      r.progress = round == 0 ? req.progress : nullptr;
      build_on_previous(r);
      auto rt0 = Clock::now();
      uint64_t wire0 = ch.bytes_sent();
      DumpResult d = in_context(strfmt("pre-copy round %d", round), [&] { return dump_tree(r); });
      parent_id = d.checkpoint_id;
      covered.load(out.maps);
      wait_ack(ch, set);
      RoundStats rs =
          round_stats(d, static_cast<uint32_t>(round), ch.bytes_sent() - wire0, us_since(rt0));
      res.rounds.push_back(rs);
      ch.send(control("round", set, d.stats.pages));
      LOG_INFO("pre-copy round %d: %llu pages, %.1f MiB in %.0f ms", round,
               static_cast<unsigned long long>(rs.pages), static_cast<double>(rs.bytes) / 1048576,
               static_cast<double>(rs.us) / 1e3);
      // Stop when what is written meanwhile would fit the downtime at the
      // rate just measured (half of it: the restore needs the rest), or
      // when it no longer shrinks.
      double rate =
          static_cast<double>(rs.bytes) / std::max<double>(1.0, static_cast<double>(rs.us));
      double next_ms = static_cast<double>(rs.raw_bytes) / std::max(rate, 1.0) / 1e3;
      if (round > 0 && (next_ms <= req.target_downtime_ms / 2.0 || rs.pages >= prev_pages)) break;
      prev_pages = rs.pages;
    }
  }

  // The last round: the tree stops, and stays stopped until the
  // destination runs it (or fails: then it carries on here).
  set++;
  RoundSink out(ch, set);
  DumpRequest r = base;
  r.sink = &out.keep;
  r.opts.lazy_pages = req.mode == Mode::kPostcopy;
  r.progress = req.mode == Mode::kStopAndCopy ? req.progress : nullptr;
  build_on_previous(r);
  uint64_t freeze_rt = realtime_us();
  // The destination makes what it can while this side dumps (its cgroup).
  bool preview_sent = false;
  r.before_stop = [&] {
    // The destination makes the tree's network namespace and root from the
    // preview before the tree stops, rather than beside its dump, on the
    // same two CPUs (a few ms, while it runs).
    if (preview_sent && !wait_control(ch, "preview-ready", set, 250))
      LOG_DEBUG("the destination did not make the tree's namespaces within 250 ms");
    freeze_rt = realtime_us();
    ch.send(control("stopping", set));
  };
  // The root's namespaces, mounts and network namespace go ahead of the
  // set, read right before the stop; the destination uses what it made of
  // them if the set's images, read once the tree is stopped, agree.
  r.on_preview = [&](const img::TreePreview& p) {
    std::string body = p.SerializeAsString();
    ch.send(control("preview", set), body.data(), body.size());
    preview_sent = true;
  };
  auto rt0 = Clock::now();
  uint64_t wire0 = ch.bytes_sent();
  uint64_t final_bytes = 0;  // the set, not the pages pushed after the resume
  r.after_commit = [&](const DumpContext& ctx) {
    final_bytes = ch.bytes_sent() - wire0;
    ch.send(control("final", set, freeze_rt));
    std::optional<PageServer> pages;
    if (req.mode == Mode::kPostcopy) pages.emplace(ch, ctx, out.maps, req.progress);
    bool resumed = false, done = req.mode != Mode::kPostcopy;
    auto deadline = Clock::now() + std::chrono::milliseconds(kResumeTimeoutMs);
    while (!resumed || !done) {
      Frame f;
      if (!ch.recv(f, 1000)) {
        if (!resumed && Clock::now() > deadline)
          throw Error(
              strfmt("the destination did not run the tree within %d s", kResumeTimeoutMs / 1000));
        continue;
      }
      if (f.msg.has_fail()) throw Error("the destination failed: " + f.msg.fail().error());
      if (f.msg.has_page_request()) {
        if (!pages) throw Error("the destination asked for pages, but this is not post-copy");
        pages->serve(f.msg.page_request());
        continue;
      }
      if (!f.msg.has_control()) continue;
      const auto& c = f.msg.control();
      if (c.what() == "resumed") {
        resumed = true;
        res.downtime_us =
            static_cast<int64_t>(c.a()) - peer.clock_offset_us - static_cast<int64_t>(freeze_rt);
        res.restore_us = c.b();
        LOG_INFO("running on %s after %.1f ms", ch.peer().c_str(),
                 static_cast<double>(res.downtime_us) / 1e3);
        if (pages) pages->start_push();
      } else if (c.what() == "pages-done") {
        done = true;
      }
    }
    if (pages) {
      pages->stop();
      res.lazy_pages = pages->total();
      res.pushed_pages = pages->pushed();
      res.requested_pages = pages->requested();
    }
    return DumpEnd::kKill;
  };
  DumpResult d = in_context("final round", [&] {
    try {
      return dump_tree(r);
    } catch (const Error& e) {
      // The tree carries on here (the dump thawed it): the destination
      // must not keep a copy running.
      ch.try_send_fail(e.what());
      throw;
    }
  });
  RoundStats fin =
      round_stats(d, static_cast<uint32_t>(res.rounds.size()), final_bytes, us_since(rt0));
  fin.final = true;
  res.rounds.push_back(fin);
  // The destination owns the container now: what is left of it here goes.
  if (ct) {
    try {
      container::remove_container(req.container, true);
    } catch (const Error& e) {
      LOG_WARN("container %s: leftovers on this host: %s", req.container.c_str(), e.what());
    }
  }
  ch.send(control("bye"));
  res.wire_bytes = ch.bytes_sent();
  res.total_us = us_since(t0);
  return res;
}

std::string format_table(const MigrateResult& r, Mode mode) {
  std::string out;
  out += strfmt("%-8s %10s %12s %12s %10s %10s\n", "round", "pages", "raw MiB", "sent MiB",
                "time ms", "frozen ms");
  uint64_t raw = 0, stored = 0;
  for (const auto& x : r.rounds) {
    out += strfmt(
        "%-8s %10llu %12.1f %12.1f %10.1f %10.1f\n",
        x.final ? "final" : strfmt("%u", x.round).c_str(), static_cast<unsigned long long>(x.pages),
        static_cast<double>(x.raw_bytes) / 1048576, static_cast<double>(x.bytes) / 1048576,
        static_cast<double>(x.us) / 1e3, static_cast<double>(x.frozen_us) / 1e3);
    raw += x.raw_bytes;
    stored += x.stored_bytes;
  }
  if (mode == Mode::kPostcopy)
    out += strfmt("post-copy: %llu pages after resume (%llu pushed, %llu on request)\n",
                  static_cast<unsigned long long>(r.lazy_pages),
                  static_cast<unsigned long long>(r.pushed_pages),
                  static_cast<unsigned long long>(r.requested_pages));
  out += strfmt("compression saved %.1f MiB of page data\n",
                raw > stored ? static_cast<double>(raw - stored) / 1048576 : 0.0);
  out += strfmt("total %.3f s, %.1f MiB on the wire, restore on %s %.1f ms, downtime %.1f ms\n",
                static_cast<double>(r.total_us) / 1e6, static_cast<double>(r.wire_bytes) / 1048576,
                r.peer.c_str(), static_cast<double>(r.restore_us) / 1e3,
                static_cast<double>(r.downtime_us) / 1e3);
  return out;
}

}  // namespace ckpt::migrate
