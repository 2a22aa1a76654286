#include "migrate/net_images.h"

#include <sys/mman.h>

#include <cstring>

#include <algorithm>
#include <new>
#include <utility>

#include "image/crc32c.h"
#include "image/record_file.h"  // make_blob
#include "sys/error.h"

namespace ckpt::migrate {

// ---- NetSink (source) -------------------------------------------------------

// Collects small writes into kImageChunk frames; large writes into an empty
// buffer go out straight from the caller's memory.
class NetStreamWriter : public image::StreamWriter {
 public:
  NetStreamWriter(NetSink& sink, std::string name) : sink_(sink), name_(std::move(name)) {
    image_ = sink_.begin(name_, 0);
    sink_.open_streams_++;
    buf_.reserve(kImageChunk);
  }
  ~NetStreamWriter() override {
    if (committed_) return;
    sink_.open_streams_--;
    mig::Envelope e;
    auto* a = e.mutable_image_abort();
    a->set_set(sink_.set_);
    a->set_name(name_);
    a->set_image(image_);
    try {
      sink_.ch_.send(e);
    } catch (const Error&) {
      // The connection is gone: the receiver drops the set with it.
    }
  }

  void write(const void* data, size_t len) override {
    if (committed_) throw Error("image " + name_ + ": write after commit");
    auto* p = static_cast<const char*>(data);
    offset_ += len;
    while (len > 0) {
      if (buf_.empty() && len >= kImageChunk) {
        crc_ = sink_.data(image_, p, kImageChunk, crc_);
        p += kImageChunk;
        len -= kImageChunk;
        continue;
      }
      size_t n = std::min(len, kImageChunk - buf_.size());
      buf_.append(p, n);
      p += n;
      len -= n;
      if (buf_.size() == kImageChunk) flush();
    }
  }
  uint64_t offset() const override { return offset_; }

  void commit() override {
    if (committed_) return;
    flush();
    sink_.end(image_, name_, offset_, crc_);
    committed_ = true;
    sink_.open_streams_--;
  }

 private:
  void flush() {
    if (buf_.empty()) return;
    crc_ = sink_.data(image_, buf_.data(), buf_.size(), crc_);
    buf_.clear();
  }
  NetSink& sink_;
  std::string name_;
  uint32_t image_ = 0;
  std::string buf_;
  uint64_t offset_ = 0;
  uint32_t crc_ = 0;
  bool committed_ = false;
};

NetSink::NetSink(Channel& ch, uint32_t set, std::optional<uint32_t> parent_set)
    : ch_(ch), set_(set), parent_(parent_set) {}

uint32_t NetSink::begin(const std::string& name, uint64_t size) {
  if (committed_) throw Error("image " + name + ": put after migration set was committed");
  uint32_t image = next_image_++;
  mig::Envelope e;
  auto* b = e.mutable_image_begin();
  b->set_set(set_);
  b->set_name(name);
  b->set_size(size);
  b->set_image(image);
  ch_.send(e);
  return image;
}

uint32_t NetSink::data(uint32_t image, const void* p, size_t len, uint32_t crc) {
  mig::Envelope e;
  auto* d = e.mutable_image_data();
  d->set_set(set_);
  d->set_image(image);
  auto* c = static_cast<const char*>(p);
  for (size_t off = 0; off < len; off += kImageChunk) {
    size_t n = std::min(kImageChunk, len - off);
    ch_.send(e, c + off, n);
    bytes_ += n;
  }
  return image::crc32c(p, len, crc);
}

void NetSink::end(uint32_t image, const std::string& name, uint64_t size, uint32_t crc) {
  mig::Envelope e;
  auto* x = e.mutable_image_end();
  x->set_set(set_);
  x->set_name(name);
  x->set_size(size);
  x->set_crc32c(crc);
  x->set_image(image);
  ch_.send(e);
}

void NetSink::put(const std::string& name, const void* data, size_t len) {
  uint32_t image = begin(name, len);
  uint32_t crc = this->data(image, data, len, 0);
  end(image, name, len, crc);
}

std::unique_ptr<image::StreamWriter> NetSink::open_stream(const std::string& name) {
  return std::make_unique<NetStreamWriter>(*this, name);
}

void NetSink::commit() {
  if (committed_) return;
  if (open_streams_ > 0)
    throw Error(strfmt("migration set %u: committed with %d image stream(s) still open", set_,
                       open_streams_.load()));
  mig::Envelope e;
  auto* c = e.mutable_set_commit();
  c->set_set(set_);
  c->set_has_parent(parent_.has_value());
  c->set_parent_set(parent_.value_or(0));
  ch_.send(e);
  committed_ = true;
}

// ---- MemSource (destination) ------------------------------------------------

MemSource::MemSource(uint32_t set, std::string peer, std::shared_ptr<const MemSource> parent)
    : set_(set), peer_(std::move(peer)), parent_(std::move(parent)) {}

std::shared_ptr<const image::Blob> MemSource::open(const std::string& name) const {
  auto it = images_.find(name);
  if (it == images_.end()) throw Error(name + ": no such image in " + where());
  return it->second;
}

bool MemSource::exists(const std::string& name) const {
  return images_.count(name) > 0;
}

std::string MemSource::where() const {
  return strfmt("migration set %u from %s", set_, peer_.c_str());
}

uint64_t MemSource::bytes() const {
  uint64_t n = 0;
  for (const auto& [name, blob] : images_) n += blob->size();
  return n;
}

void MemSource::save_to(const std::string& dir) const {
  image::DirSink sink(dir);
  for (const auto& [name, blob] : images_) sink.put(name, blob->data(), blob->size());
  sink.commit();
}

// ---- SetReceiver ------------------------------------------------------------

namespace {

// Names become file names in save_to(): nothing that leaves the directory.
bool valid_image_name(const std::string& n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string::npos &&
         n.find('\0') == std::string::npos && n.size() <= 255;
}

}  // namespace

namespace {

// An image received in many frames (page data): an anonymous mapping grown
// with mremap, which moves pages instead of copying them, and populated in
// one call per growth (faulting a fresh page at a time is what costs most
// in this VM). Frame bodies are read straight into it. It is never copied
// into a child: the restore forks its stubs from this process, and a fork
// copies the page tables of every private mapping (60 ms for a received
// GiB, all of it downtime).
class GrowBuffer {
 public:
  GrowBuffer() = default;
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer(GrowBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), size_(o.size_), cap_(std::exchange(o.cap_, 0)) {}
  ~GrowBuffer() {
    if (p_) munmap(p_, cap_);
  }
  // Room for n more bytes at tail().
  void reserve_more(size_t n) {
    if (size_ + n <= cap_) return;
    size_t cap = std::max<size_t>({cap_ * 2, size_ + n, 4u << 20});
    cap = (cap + 4095) & ~size_t{4095};
    void* q = p_ ? mremap(p_, cap_, cap, MREMAP_MAYMOVE)
                 : mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) throw Error(strfmt("cannot hold %zu bytes in memory", cap));
    madvise(q, cap, MADV_DONTFORK);
    madvise(static_cast<char*>(q) + cap_, cap - cap_, MADV_POPULATE_WRITE);
    p_ = static_cast<char*>(q);
    cap_ = cap;
  }
  char* tail() { return p_ + size_; }
  void grow(size_t n) { size_ += n; }
  size_t size() const { return size_; }
  const char* data() const { return p_; }

 private:
  char* p_ = nullptr;
  size_t size_ = 0, cap_ = 0;
};

class GrowBlob : public image::Blob {
 public:
  explicit GrowBlob(GrowBuffer b) : b_(std::move(b)) {}
  const uint8_t* data() const override { return reinterpret_cast<const uint8_t*>(b_.data()); }
  size_t size() const override { return b_.size(); }

 private:
  GrowBuffer b_;
};

}  // namespace

struct SetReceiver::Pending {
  struct Open {
    std::string name;
    uint64_t declared = 0;  // ImageBegin.size, 0 = streamed
    std::string bytes;      // an image in one frame, kept as it came
    GrowBuffer big;         // the others
    uint32_t crc = 0;
    size_t size() const { return bytes.size() + big.size(); }
  };
  std::map<uint32_t, Open> open;  // by ImageBegin.image
  std::map<std::string, std::shared_ptr<const image::Blob>> images;
};

SetReceiver::SetReceiver(std::string peer) : peer_(std::move(peer)) {}
SetReceiver::~SetReceiver() = default;

SetReceiver::Pending& SetReceiver::pending(uint32_t set) {
  if (committed_.count(set))
    throw Error(
        strfmt("migration set %u from %s: images after the set was committed", set, peer_.c_str()));
  auto& p = pending_[set];
  if (!p) p = std::make_unique<Pending>();
  return *p;
}

bool SetReceiver::feed(Frame& f) {
  const auto& m = f.msg;
  auto where = [&](uint32_t set) { return strfmt("migration set %u from %s", set, peer_.c_str()); };
  switch (m.msg_case()) {
    case mig::Envelope::kImageBegin: {
      const auto& b = m.image_begin();
      std::string ctx = where(b.set()) + ": image " + b.name();
      Pending& p = pending(b.set());
      if (!valid_image_name(b.name()))
        throw Error(where(b.set()) + ": bad image name '" + b.name() + "'");
      if (p.images.count(b.name())) throw Error(ctx + ": sent twice");
      for (const auto& [no, o] : p.open)
        if (o.name == b.name()) throw Error(ctx + ": sent twice");
      if (p.open.count(b.image()))
        throw Error(strfmt("%s: image number %u is already open", ctx.c_str(), b.image()));
      auto& o = p.open[b.image()];
      o.name = b.name();
      o.declared = b.size();
      return true;
    }
    case mig::Envelope::kImageData: {
      const auto& d = m.image_data();
      auto pit = pending_.find(d.set());
      Pending::Open* o = nullptr;
      if (pit != pending_.end()) {
        auto it = pit->second->open.find(d.image());
        if (it != pit->second->open.end()) o = &it->second;
      }
      if (!o)
        throw Error(strfmt("%s: data for image number %u, which was not begun",
                           where(d.set()).c_str(), d.image()));
      if (o->declared && o->size() + f.body.size() > o->declared)
        throw Error(strfmt("%s: image %s: more than the %lu bytes announced",
                           where(d.set()).c_str(), o->name.c_str(), o->declared));
      o->crc = image::crc32c(f.body.data(), f.body.size(), o->crc);
      // A whole image in one frame (most record images) is kept as received.
      if (o->size() == 0 && f.body.size() == o->declared) {
        o->bytes = std::move(f.body);
      } else {
        if (!o->bytes.empty()) {  // (a first frame that was not the whole image)
          o->big.reserve_more(o->bytes.size());
          memcpy(o->big.tail(), o->bytes.data(), o->bytes.size());
          o->big.grow(o->bytes.size());
          o->bytes.clear();
        }
        o->big.reserve_more(f.body.size());
        memcpy(o->big.tail(), f.body.data(), f.body.size());
        o->big.grow(f.body.size());
      }
      return true;
    }
    case mig::Envelope::kImageEnd: {
      const auto& x = m.image_end();
      std::string ctx = where(x.set()) + ": image " + x.name();
      auto pit = pending_.find(x.set());
      if (pit == pending_.end() || !pit->second->open.count(x.image()))
        throw Error(ctx + ": end of an image not begun");
      Pending& p = *pit->second;
      auto node = p.open.extract(x.image());
      Pending::Open& o = node.mapped();
      if (o.name != x.name())
        throw Error(strfmt("%s: end of image number %u, which was begun as %s", ctx.c_str(),
                           x.image(), o.name.c_str()));
      if (o.size() != x.size() || (o.declared && o.declared != x.size()))
        throw Error(strfmt("%s: %zu bytes received, %lu announced", ctx.c_str(), o.size(),
                           o.declared ? o.declared : x.size()));
      if (o.crc != x.crc32c())
        throw Error(strfmt("%s: crc32c mismatch (received %08x, sent %08x)", ctx.c_str(), o.crc,
                           x.crc32c()));
      if (o.big.size() > 0)
        p.images.emplace(o.name, std::make_shared<GrowBlob>(std::move(o.big)));
      else
        p.images.emplace(o.name, image::make_blob(std::move(o.bytes)));
      return true;
    }
    case mig::Envelope::kImageAbort: {
      const auto& a = m.image_abort();
      auto pit = pending_.find(a.set());
      if (pit != pending_.end()) pit->second->open.erase(a.image());
      return true;
    }
    case mig::Envelope::kSetCommit: {
      const auto& c = m.set_commit();
      std::string ctx = where(c.set());
      if (committed_.count(c.set())) throw Error(ctx + ": committed twice");
      std::shared_ptr<const MemSource> parent;
      if (c.has_parent()) {
        auto it = committed_.find(c.parent_set());
        if (it == committed_.end() || c.parent_set() == c.set())
          throw Error(
              strfmt("%s: its parent, set %u, was not received", ctx.c_str(), c.parent_set()));
        parent = it->second;
      }
      auto src = std::make_shared<MemSource>(c.set(), peer_, parent);
      auto pit = pending_.find(c.set());
      if (pit != pending_.end()) {
        if (!pit->second->open.empty())
          throw Error(ctx + ": committed with image " + pit->second->open.begin()->second.name +
                      " still open");
        src->images_ = std::move(pit->second->images);
        pending_.erase(pit);
      }
      committed_[c.set()] = src;
      last_ = src;
      return true;
    }
    default:
      return false;
  }
}

bool SetReceiver::recv(Channel& ch, Frame& f, int timeout_ms) {
  try {
    for (;;) {
      size_t body = 0;
      if (!ch.recv_header(f, &body, timeout_ms)) return false;
      // Data of an image being streamed goes straight into its buffer,
      // and is consumed here; everything else goes to the caller.
      Pending::Open* o = nullptr;
      if (f.msg.has_image_data()) {
        auto pit = pending_.find(f.msg.image_data().set());
        if (pit != pending_.end()) {
          auto it = pit->second->open.find(f.msg.image_data().image());
          if (it != pit->second->open.end() && (it->second.declared == 0 || it->second.size() > 0))
            o = &it->second;
        }
      }
      if (!o || !o->bytes.empty() || (o->declared && o->size() + body > o->declared)) {
        f.body.resize(body);
        ch.recv_body(f.body.data(), body);
        return true;
      }
      o->big.reserve_more(body);
      ch.recv_body(o->big.tail(), body);
      o->crc = image::crc32c(o->big.tail(), body, o->crc);
      o->big.grow(body);
    }
  } catch (Error& e) {
    std::string open;
    for (const auto& [set, p] : pending_)
      for (const auto& [no, o] : p->open) {
        if (!open.empty()) open += ", ";
        open += strfmt("image %s of migration set %u", o.name.c_str(), set);
      }
    if (!open.empty()) e.wrap("receiving " + open + " from " + peer_);
    throw;
  }
}

std::shared_ptr<MemSource> SetReceiver::take_committed() {
  return std::exchange(last_, nullptr);
}

std::shared_ptr<MemSource> SetReceiver::set(uint32_t id) const {
  auto it = committed_.find(id);
  return it == committed_.end() ? nullptr : it->second;
}

}  // namespace ckpt::migrate
