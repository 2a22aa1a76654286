// The migration wire layer: SHA-256/HMAC, frames, handshake, images over a
// socket. Both ends run in this process: a socketpair (or a Listener on
// 127.0.0.1:0) and a thread for the other side.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "image/crc32c.h"
#include "migrate/net_images.h"
#include "migrate/sha256.h"
#include "migrate/transport.h"
#include "sys/error.h"
#include "sys/fd.h"

namespace {

namespace fs = std::filesystem;
using namespace ckpt;
using namespace ckpt::migrate;

std::pair<Channel, Channel> channel_pair() {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  return {Channel(UniqueFd(sv[0]), "peer-b"), Channel(UniqueFd(sv[1]), "peer-a")};
}

// Raw access to the far end of a pair, for hand-made bytes.
struct RawPair {
  RawPair() {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
  }
  ~RawPair() {
    if (sv[1] >= 0) close(sv[1]);
  }
  void write(const std::string& s) { write_full(sv[1], s.data(), s.size(), "test"); }
  void close_writer() {
    close(sv[1]);
    sv[1] = -1;
  }
  int sv[2];
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// ---- SHA-256 / HMAC ---------------------------------------------------------

TEST(MigrateSha256, Fips180Vectors) {
  EXPECT_EQ(to_hex(sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(to_hex(sha256(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(to_hex(sha256("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(MigrateSha256, IncrementalEqualsOneShot) {
  std::string data = pattern(1000, 7);
  for (size_t split : {0, 1, 55, 56, 63, 64, 65, 128, 999}) {
    Sha256 h;
    h.update(data.data(), split);
    h.update(data.data() + split, data.size() - split);
    EXPECT_EQ(to_hex(h.finish()), to_hex(sha256(data))) << split;
  }
}

TEST(MigrateSha256, Rfc4231HmacVectors) {
  EXPECT_EQ(to_hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(to_hex(hmac_sha256(std::string(20, '\xaa'), std::string(50, '\xdd'))),
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
  std::string k4;
  for (int i = 1; i <= 25; i++) k4 += static_cast<char>(i);
  EXPECT_EQ(to_hex(hmac_sha256(k4, std::string(50, '\xcd'))),
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
  std::string big_key(131, '\xaa');
  EXPECT_EQ(to_hex(hmac_sha256(big_key, "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
  EXPECT_EQ(to_hex(hmac_sha256(big_key,
                               "This is a test using a larger than block-size key and a larger "
                               "than block-size data. The key needs to be hashed before being "
                               "used by the HMAC algorithm.")),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(MigrateSha256, ConstantTimeCompare) {
  EXPECT_TRUE(equal_constant_time("abc", "abc"));
  EXPECT_FALSE(equal_constant_time("abc", "abd"));
  EXPECT_FALSE(equal_constant_time("abc", "ab"));
  EXPECT_TRUE(equal_constant_time("", ""));
}

// ---- frames -----------------------------------------------------------------

TEST(MigrateFrame, SendRecvWithBody) {
  auto [a, b] = channel_pair();
  mig::Envelope m;
  m.mutable_control()->set_what("round-done");
  m.mutable_control()->set_a(42);
  std::string body = pattern(100000, 1);
  std::thread t([&] { a.send(m, body.data(), body.size()); });
  Frame f;
  ASSERT_TRUE(b.recv(f, 5000));
  t.join();
  EXPECT_EQ(f.msg.control().what(), "round-done");
  EXPECT_EQ(f.msg.control().a(), 42u);
  EXPECT_EQ(f.body, body);
  EXPECT_EQ(a.bytes_sent(), b.bytes_received());
  EXPECT_GT(a.bytes_sent(), body.size());
}

TEST(MigrateFrame, EncodeDecodeRoundTrip) {
  mig::Envelope m;
  m.mutable_page_request()->set_id("42");
  m.mutable_page_request()->set_vaddr(0x7f0000000000);
  std::string wire = encode_frame(m, "xyz", 3);
  Frame f;
  EXPECT_EQ(decode_frame(wire.data(), wire.size() - 1, f, "p"), 0u);  // incomplete
  ASSERT_EQ(decode_frame(wire.data(), wire.size(), f, "p"), wire.size());
  EXPECT_EQ(f.msg.page_request().vaddr(), 0x7f0000000000u);
  EXPECT_EQ(f.body, "xyz");
}

TEST(MigrateFrame, RecvTimeoutReturnsFalse) {
  auto [a, b] = channel_pair();
  Frame f;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(b.recv(f, 50));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(45));
}

TEST(MigrateFrame, OversizedFrameIsAnError) {
  RawPair p;
  Channel ch(UniqueFd(p.sv[0]), "10.77.0.1:41000");
  p.write(std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8));
  Frame f;
  EXPECT_EQ(error_of([&] { ch.recv(f, 1000); }),
            "migration stream from 10.77.0.1:41000: frame of 4294967295 bytes");
}

TEST(MigrateFrame, HeaderLongerThanFrameIsAnError) {
  RawPair p;
  Channel ch(UniqueFd(p.sv[0]), "peer");
  p.write(std::string("\x10\x00\x00\x00\x20\x00\x00\x00", 8));
  Frame f;
  EXPECT_NE(error_of([&] { ch.recv(f, 1000); }).find("header of 32 bytes in a frame of 16"),
            std::string::npos);
}

TEST(MigrateFrame, GarbageHeaderIsAnError) {
  RawPair p;
  Channel ch(UniqueFd(p.sv[0]), "peer");
  p.write(std::string("\x08\x00\x00\x00\x04\x00\x00\x00\xff\xff\xff\xff", 12));
  Frame f;
  EXPECT_EQ(error_of([&] { ch.recv(f, 1000); }),
            "migration stream from peer: a frame header that does not parse");
}

TEST(MigrateFrame, EofAndTruncation) {
  {
    RawPair p;
    Channel ch(UniqueFd(p.sv[0]), "peer");
    p.close_writer();
    Frame f;
    EXPECT_EQ(error_of([&] { ch.recv(f, 1000); }), "connection to peer closed");
  }
  {
    RawPair p;
    Channel ch(UniqueFd(p.sv[0]), "peer");
    mig::Envelope m;
    m.mutable_control()->set_what("x");
    std::string wire = encode_frame(m, "0123456789", 10);
    p.write(wire.substr(0, wire.size() - 3));
    p.close_writer();
    Frame f;
    EXPECT_NE(error_of([&] { ch.recv(f, 1000); }).find("connection closed inside a frame"),
              std::string::npos);
  }
}

TEST(MigrateFrame, ShutdownWakesBlockedRecv) {
  auto [a, b] = channel_pair();
  std::string err;
  std::thread t([&] {
    Frame f;
    err = error_of([&] { b.recv(f, -1); });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  b.shutdown();
  t.join();
  EXPECT_EQ(err, "connection to peer-a closed");
}

TEST(MigrateFrame, BodyOverTheCapIsRefused) {
  auto [a, b] = channel_pair();
  std::string big(kMaxBody + 1, 'x');
  EXPECT_NE(error_of([&] { a.send(mig::Envelope(), big.data(), big.size()); }).find("body of"),
            std::string::npos);
}

// Random bytes as frames: every outcome is a frame or an Error, never a
// crash, and whatever parses goes through the receiver too.
TEST(MigrateFrame, RandomBytesNeverCrash) {
  std::mt19937 rng(12345);
  mig::Envelope seed_msgs[4];
  seed_msgs[0].mutable_image_begin()->set_name("pages-1.img");
  seed_msgs[1].mutable_image_data()->set_image(1);
  seed_msgs[2].mutable_image_end()->set_name("pages-1.img");
  seed_msgs[3].mutable_set_commit()->set_has_parent(true);
  for (int iter = 0; iter < 20000; iter++) {
    std::string buf;
    if (iter % 2 == 0) {
      // A valid frame with a few bytes flipped: reaches the parser and the receiver.
      buf = encode_frame(seed_msgs[iter % 4], "abcdef", rng() % 7);
      for (int k = rng() % 4; k > 0; k--) buf[rng() % buf.size()] ^= char(1 << (rng() % 8));
    } else {
      buf.resize(rng() % 64);
      for (auto& c : buf) c = char(rng());
    }
    SetReceiver r("fuzz");
    size_t off = 0;
    try {
      Frame f;
      while (size_t n = decode_frame(buf.data() + off, buf.size() - off, f, "fuzz")) {
        off += n;
        r.feed(f);
      }
    } catch (const Error&) {
    }
  }
  // And through a socket: garbage then close is one Error.
  RawPair p;
  Channel ch(UniqueFd(p.sv[0]), "peer");
  p.write(pattern(3000, 9));
  p.close_writer();
  SetReceiver r("peer");
  Frame f;
  EXPECT_THROW(
      {
        while (r.recv(ch, f, 1000)) r.feed(f);
      },
      Error);
}

// ---- key files --------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "transport-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name, const std::string& content) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(MigratePsk, ReadsKeyFiles) {
  TempDir d;
  EXPECT_EQ(read_psk_file(d.file("k1", "secret\n")), "secret");
  EXPECT_EQ(read_psk_file(d.file("k2", "secret")), "secret");
  EXPECT_EQ(read_psk_file(d.file("k3", std::string(4096, 'k'))), std::string(4096, 'k'));
  std::string empty = d.file("k4", "\n");
  EXPECT_EQ(error_of([&] { read_psk_file(empty); }), "key file " + empty + ": empty");
  std::string big = d.file("k5", std::string(4097, 'k'));
  EXPECT_EQ(error_of([&] { read_psk_file(big); }), "key file " + big + ": longer than 4096 bytes");
  EXPECT_NE(error_of([&] { read_psk_file(d.path() + "/missing"); }).find(d.path() + "/missing"),
            std::string::npos);
}

// ---- handshake --------------------------------------------------------------

struct Side {
  std::optional<PeerInfo> info;
  std::string error;
};

mig::Hello hello(const std::string& role) {
  mig::Hello h;
  h.set_role(role);
  h.set_mode("precopy");
  return h;
}

// Runs both handshakes, the source over a Listener on 127.0.0.1:0.
std::pair<Side, Side> handshake_pair(const std::string& src_key, const std::string& dst_key,
                                     const std::string& src_role = "source") {
  Listener l = Listener::bind("127.0.0.1:0");
  Side src, dst;
  std::thread t([&] {
    try {
      Channel ch = Channel::connect(l.address(), 5000);
      src.info = handshake(ch, hello(src_role), src_key);
    } catch (const Error& e) {
      src.error = e.what();
    }
  });
  try {
    Channel ch = l.accept(5000);
    dst.info = handshake(ch, hello("destination"), dst_key);
  } catch (const Error& e) {
    dst.error = e.what();
  }
  t.join();
  return {src, dst};
}

TEST(MigrateHandshake, SameKeySucceeds) {
  auto [src, dst] = handshake_pair("k3y", "k3y");
  ASSERT_TRUE(src.info) << src.error;
  ASSERT_TRUE(dst.info) << dst.error;
  EXPECT_EQ(src.info->hello.role(), "destination");
  EXPECT_EQ(dst.info->hello.role(), "source");
  EXPECT_EQ(dst.info->hello.mode(), "precopy");
  EXPECT_TRUE(dst.info->hello.auth());
  EXPECT_EQ(dst.info->hello.challenge().size(), 32u);
  EXPECT_EQ(dst.info->hello.version(), kProtocolVersion);
  EXPECT_FALSE(dst.info->hello.hostname().empty());
  // Same clock on both ends: the estimate is the noise of the exchange;
  // the source's, from its fastest clock ping, at most half a round trip
  // over loopback.
  EXPECT_LT(std::abs(src.info->clock_offset_us), 5'000);
  EXPECT_LT(std::abs(dst.info->clock_offset_us), 200'000);
}

TEST(MigrateHandshake, NoKeysSucceeds) {
  auto [src, dst] = handshake_pair("", "");
  ASSERT_TRUE(src.info) << src.error;
  ASSERT_TRUE(dst.info) << dst.error;
  EXPECT_FALSE(dst.info->hello.auth());
}

TEST(MigrateHandshake, DifferentKeysFailBothSides) {
  auto [src, dst] = handshake_pair("key-one", "key-two");
  EXPECT_FALSE(src.info);
  EXPECT_FALSE(dst.info);
  EXPECT_NE(src.error.find("authentication with 127.0.0.1:"), std::string::npos) << src.error;
  EXPECT_NE(src.error.find("failed: wrong key"), std::string::npos) << src.error;
  EXPECT_NE(dst.error.find("failed: wrong key"), std::string::npos) << dst.error;
}

TEST(MigrateHandshake, OneSideWithoutKeyIsRefused) {
  {
    auto [src, dst] = handshake_pair("", "key");
    EXPECT_NE(src.error.find("failed: we have no key"), std::string::npos) << src.error;
    EXPECT_NE(dst.error.find("failed: the peer has no key"), std::string::npos) << dst.error;
  }
  {
    auto [src, dst] = handshake_pair("key", "");
    EXPECT_NE(src.error.find("failed: the peer has no key"), std::string::npos) << src.error;
    EXPECT_NE(dst.error.find("failed: we have no key"), std::string::npos) << dst.error;
  }
}

TEST(MigrateHandshake, SameRoleIsRefused) {
  auto [src, dst] = handshake_pair("", "", "destination");
  EXPECT_NE(src.error.find("is also the destination"), std::string::npos) << src.error;
  EXPECT_NE(dst.error.find("is also the destination"), std::string::npos) << dst.error;
}

TEST(MigrateHandshake, VersionMismatchAndFailMessage) {
  auto [a, b] = channel_pair();
  std::string err;
  std::thread t([&] { err = error_of([&] { handshake(b, hello("destination"), ""); }); });
  // A peer from the future: its hello, then it reads our refusal.
  mig::Envelope e;
  *e.mutable_hello() = hello("source");
  e.mutable_hello()->set_version(kProtocolVersion + 1);
  e.mutable_hello()->set_challenge(std::string(32, 'c'));
  a.send(e);
  Frame f;
  ASSERT_TRUE(a.recv(f, 5000));
  EXPECT_TRUE(f.msg.has_hello());
  ASSERT_TRUE(a.recv(f, 5000));
  ASSERT_TRUE(f.msg.has_fail());
  EXPECT_NE(f.msg.fail().error().find("version"), std::string::npos);
  t.join();
  EXPECT_NE(err.find(strfmt("peer-a speaks migration protocol version %u, this ckpt speaks %u",
                            kProtocolVersion + 1, kProtocolVersion)),
            std::string::npos)
      << err;

  // A Fail instead of a hello is reported with the peer's text.
  auto [c, d] = channel_pair();
  mig::Envelope fail;
  fail.mutable_fail()->set_error("disk full");
  c.send(fail);
  EXPECT_EQ(error_of([&] { handshake(d, hello("destination"), ""); }), "peer-a: disk full");
}

TEST(MigrateHandshake, ConnectErrorNamesTheAddress) {
  Listener l = Listener::bind("127.0.0.1:0");
  std::string addr = l.address();
  { Listener gone = std::move(l); }  // closed: nobody listens there now
  std::string err = error_of([&] { Channel::connect(addr, 2000); });
  EXPECT_NE(err.find("connect to " + addr), std::string::npos) << err;
  EXPECT_NE(error_of([&] { Channel::connect("nonsense", 100); }).find("bad address"),
            std::string::npos);
  Listener l6 = Listener::bind("[::1]:0");
  EXPECT_EQ(l6.address().rfind("[::1]:", 0), 0u) << l6.address();
  EXPECT_NE(error_of([&] { l6.accept(50); }).find("no connection on [::1]:"), std::string::npos);
}

// ---- images -----------------------------------------------------------------

// Receives frames until `sets` sets have been committed.
std::vector<std::shared_ptr<MemSource>> receive_sets(Channel& ch, SetReceiver& r, int sets) {
  std::vector<std::shared_ptr<MemSource>> out;
  Frame f;
  while (int(out.size()) < sets) {
    if (!r.recv(ch, f, 10000)) throw Error("test: timeout");
    if (!r.feed(f)) throw Error("test: not an image frame");
    if (auto s = r.take_committed()) out.push_back(s);
  }
  return out;
}

std::string blob_string(const image::ImageSource& src, const std::string& name) {
  auto b = src.open(name);
  return std::string(reinterpret_cast<const char*>(b->data()), b->size());
}

TEST(MigrateImages, RoundTripWithParentChain) {
  auto [a, b] = channel_pair();
  std::string inventory = pattern(300, 1), core = pattern(70000, 2), mm = pattern(3 << 20, 3);
  std::string pages = pattern(5 << 20, 4), pages2 = pattern(123457, 5);
  uint64_t sent = 0;
  std::string send_err;
  std::thread t([&] {
    send_err = error_of([&] {
      NetSink s1(a, 1, std::nullopt);
      auto w = s1.open_stream("pages-1.img");
      // Writes of every shape: tiny, an odd size, a whole chunk, two and a half chunks.
      size_t off = 0;
      for (size_t n : {size_t(3), size_t(4093), kImageChunk, kImageChunk * 5 / 2, size_t(1)}) {
        w->write(pages.data() + off, n);
        off += n;
      }
      s1.put("core-1.img", core.data(), core.size());  // while the stream is open
      w->write(pages.data() + off, pages.size() - off);
      EXPECT_EQ(w->offset(), pages.size());
      w->commit();
      s1.put("inventory.img", inventory.data(), inventory.size());
      s1.put("empty.img", nullptr, 0);
      {
        auto dropped = s1.open_stream("pages-dropped.img");
        dropped->write("xx", 2);
      }  // destroyed uncommitted: ImageAbort
      s1.commit();
      sent += s1.bytes();

      NetSink s2(a, 2, 1);
      s2.put("mm-1.img", mm.data(), mm.size());
      auto w2 = s2.open_stream("pages-1.img");
      w2->write(pages2.data(), pages2.size());
      w2->commit();
      s2.commit();
      sent += s2.bytes();
    });
  });
  SetReceiver r("peer-a");
  std::vector<std::shared_ptr<MemSource>> sets;
  std::string recv_err = error_of([&] { sets = receive_sets(b, r, 2); });
  t.join();
  ASSERT_EQ(send_err, "(no error)");
  ASSERT_EQ(recv_err, "(no error)");
  ASSERT_EQ(sets.size(), 2u);
  EXPECT_EQ(sets[0]->set(), 1u);
  EXPECT_EQ(sets[0]->where(), "migration set 1 from peer-a");
  EXPECT_EQ(sets[0]->parent(), nullptr);
  EXPECT_EQ(blob_string(*sets[0], "pages-1.img"), pages);
  EXPECT_EQ(blob_string(*sets[0], "core-1.img"), core);
  EXPECT_EQ(blob_string(*sets[0], "inventory.img"), inventory);
  EXPECT_EQ(blob_string(*sets[0], "empty.img"), "");
  EXPECT_FALSE(sets[0]->exists("pages-dropped.img"));
  EXPECT_EQ(sets[0]->bytes(), pages.size() + core.size() + inventory.size());
  EXPECT_EQ(error_of([&] { sets[0]->open("nope.img"); }),
            "nope.img: no such image in migration set 1 from peer-a");

  EXPECT_EQ(sets[1]->parent(), sets[0]);
  EXPECT_EQ(r.set(1), sets[0]);
  EXPECT_EQ(r.set(2), sets[1]);
  EXPECT_EQ(r.set(3), nullptr);
  EXPECT_EQ(blob_string(*sets[1], "mm-1.img"), mm);
  EXPECT_EQ(blob_string(*sets[1], "pages-1.img"), pages2);
  EXPECT_FALSE(sets[1]->exists("core-1.img"));
  EXPECT_EQ(blob_string(*sets[1]->parent(), "core-1.img"), core);
  // The aborted stream's 2 bytes were still buffered: never sent.
  EXPECT_EQ(sent, sets[0]->bytes() + sets[1]->bytes());
  EXPECT_EQ(r.take_committed(), nullptr);

  TempDir d;
  sets[0]->save_to(d.path() + "/set1");
  image::DirSource saved(d.path() + "/set1");
  EXPECT_EQ(blob_string(saved, "pages-1.img"), pages);
  EXPECT_EQ(blob_string(saved, "empty.img"), "");
}

// Two threads stream into one set at once (the page writer's helper thread
// and the main thread): their frames interleave on the wire.
TEST(MigrateImages, ConcurrentStreamsInOneSet) {
  auto [a, b] = channel_pair();
  std::string p1 = pattern(3 << 20, 11), p2 = pattern((2 << 20) + 17, 12);
  std::string err;
  std::thread t([&] {
    err = error_of([&] {
      NetSink s(a, 1, std::nullopt);
      auto stream = [&](const std::string& name, const std::string& data) {
        auto w = s.open_stream(name);
        for (size_t off = 0; off < data.size(); off += 65536)
          w->write(data.data() + off, std::min<size_t>(65536, data.size() - off));
        w->commit();
      };
      std::thread other([&] { stream("pages-2.img", p2); });
      stream("pages-1.img", p1);
      other.join();
      s.commit();
    });
  });
  SetReceiver r("peer-a");
  auto sets = receive_sets(b, r, 1);
  t.join();
  ASSERT_EQ(err, "(no error)");
  EXPECT_EQ(blob_string(*sets[0], "pages-1.img"), p1);
  EXPECT_EQ(blob_string(*sets[0], "pages-2.img"), p2);
}

// Hand-made image frames for the receiver's error paths.
struct Frames {
  Frame begin(uint32_t set, const std::string& name, uint64_t size, uint32_t image = 1) {
    Frame f;
    auto* b = f.msg.mutable_image_begin();
    b->set_set(set);
    b->set_name(name);
    b->set_size(size);
    b->set_image(image);
    return f;
  }
  Frame data(uint32_t set, const std::string& body, uint32_t image = 1) {
    Frame f;
    f.msg.mutable_image_data()->set_set(set);
    f.msg.mutable_image_data()->set_image(image);
    f.body = body;
    return f;
  }
  Frame end(uint32_t set, const std::string& name, const std::string& content, uint32_t image = 1) {
    Frame f;
    auto* e = f.msg.mutable_image_end();
    e->set_set(set);
    e->set_name(name);
    e->set_size(content.size());
    e->set_crc32c(image::crc32c(content.data(), content.size()));
    e->set_image(image);
    return f;
  }
  Frame commit(uint32_t set, std::optional<uint32_t> parent = std::nullopt) {
    Frame f;
    auto* c = f.msg.mutable_set_commit();
    c->set_set(set);
    c->set_has_parent(parent.has_value());
    c->set_parent_set(parent.value_or(0));
    return f;
  }
};

TEST(MigrateImages, CorruptedCrcNamesTheImage) {
  SetReceiver r("peer-a");
  Frames F;
  Frame f = F.begin(1, "core-7.img", 5);
  r.feed(f);
  f = F.data(1, "hellp");
  r.feed(f);
  f = F.end(1, "core-7.img", "hello");
  std::string err = error_of([&] { r.feed(f); });
  EXPECT_NE(err.find("migration set 1 from peer-a: image core-7.img: crc32c mismatch"),
            std::string::npos)
      << err;
}

TEST(MigrateImages, TruncatedConnectionNamesTheImage) {
  auto [a, b] = channel_pair();
  std::string pages = pattern(3 << 20, 6);
  {
    NetSink s(a, 4, std::nullopt);
    auto w = s.open_stream("pages-9.img");
    std::thread t([&] {
      w->write(pages.data(), pages.size());
      a.shutdown();  // the source dies mid-image
    });
    SetReceiver r("peer-a");
    Frame f;
    std::string err = error_of([&] {
      while (r.recv(b, f, 5000)) r.feed(f);
    });
    t.join();
    EXPECT_EQ(err,
              "receiving image pages-9.img of migration set 4 from peer-a: connection to peer-a "
              "closed");
    EXPECT_EQ(r.take_committed(), nullptr);
  }
}

TEST(MigrateImages, ReceiverRefusesInconsistentStreams) {
  Frames F;
  auto feed_all = [](SetReceiver& r, std::vector<Frame> fs) {
    return error_of([&] {
      for (auto& f : fs) r.feed(f);
    });
  };
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.data(1, "x")}).find("not begun"), std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.begin(1, "a.img", 0), F.data(1, "abc"), F.end(1, "a.img", "abc"),
                           F.begin(1, "a.img", 0, 2)})
                  .find("image a.img: sent twice"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.begin(1, "a.img", 2), F.data(1, "abc")})
                  .find("image a.img: more than the 2 bytes announced"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    Frame end = F.end(1, "a.img", "abcd");
    end.msg.mutable_image_end()->set_crc32c(image::crc32c("abc", 3));
    EXPECT_NE(feed_all(r, {F.begin(1, "a.img", 0), F.data(1, "abc"), end})
                  .find("image a.img: 3 bytes received, 4 announced"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.commit(2, 1)}).find("its parent, set 1, was not received"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_NE(
        feed_all(r, {F.commit(1), F.commit(1)}).find("migration set 1 from p: committed twice"),
        std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.begin(1, "a.img", 0), F.commit(1)})
                  .find("committed with image a.img still open"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    EXPECT_EQ(feed_all(r, {F.commit(1), F.begin(1, "late.img", 0)}),
              "migration set 1 from p: images after the set was committed");
  }
  {
    SetReceiver r("p");
    EXPECT_NE(feed_all(r, {F.begin(1, "../etc/passwd", 0)}).find("bad image name"),
              std::string::npos);
  }
  {
    SetReceiver r("p");
    Frame other;
    other.msg.mutable_control()->set_what("resumed");
    EXPECT_FALSE(r.feed(other));
  }
}

}  // namespace
