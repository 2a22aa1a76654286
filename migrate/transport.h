// The migration wire: one TCP connection carrying frames
//   u32 LE total length (of what follows) | u32 LE header length |
//   header (serialized mig::Envelope) | body (raw bytes, the rest)
// Bodies carry image and page bytes without copying them through protobuf.
// A frame over kMaxBody + kMaxHeader, a header that does not parse, a short
// read or EOF is an Error naming the peer.
//
// Call order: Channel::connect (source) / Listener::bind + accept
// (destination), then handshake() on both sides, then send/recv freely.
// send() may be called from several threads; recv() from one only.
// shutdown() from any thread wakes a blocked recv().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "migrate.pb.h"
#include "sys/fd.h"

namespace ckpt::migrate {

// Bumped when the stream changes incompatibly; both sides must agree.
inline constexpr uint32_t kProtocolVersion = 3;
// Clock pings at the end of the handshake (see handshake()).
inline constexpr int kClockPings = 5;
inline constexpr size_t kMaxBody = 16u << 20;
inline constexpr size_t kMaxHeader = 64u << 10;

struct Frame {
  mig::Envelope msg;
  std::string body;
};

class Channel {
 public:
  explicit Channel(UniqueFd sock, std::string peer);
  Channel(Channel&& o) noexcept;
  Channel& operator=(Channel&&) = delete;
  Channel(const Channel&) = delete;

  // "10.77.0.2:7000", "[fd00::2]:7000"; sets TCP_NODELAY. Error names the address.
  static Channel connect(const std::string& host_port, int timeout_ms);

  // Thread-safe: a pager thread and the main thread both send. The body goes
  // out with writev, never copied.
  void send(const mig::Envelope& m, const void* body = nullptr, size_t len = 0);
  // False on timeout (-1 = wait forever); Error on EOF or a bad frame. Only
  // one thread receives.
  bool recv(Frame& f, int timeout_ms);
  // recv() in two steps, so a large body can go straight where it belongs:
  // the header (f.msg; f.body left empty) and the body's length, then
  // exactly that many bytes with recv_body() before the next frame.
  bool recv_header(Frame& f, size_t* body_len, int timeout_ms);
  void recv_body(void* dst, size_t len);

  int fd() const { return sock_.get(); }
  const std::string& peer() const { return peer_; }
  uint64_t bytes_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return received_.load(std::memory_order_relaxed); }
  // shutdown(SHUT_RDWR): wakes a recv() blocked in another thread.
  void shutdown();
  // Sends Fail{why} if it still can: the peer may be gone already, so a
  // send error is ignored.
  void try_send_fail(const std::string& why);

 private:
  void read_exact(void* buf, size_t len, size_t got_before, size_t frame_len);
  UniqueFd sock_;
  std::string peer_;
  std::string hdr_buf_;                                 // recv() only
  size_t body_left_ = 0, frame_len_ = 0, body_at_ = 0;  // between recv_header and recv_body
  std::mutex send_mu_;
  std::atomic<uint64_t> sent_{0}, received_{0};
};

class Listener {
 public:
  // SO_REUSEADDR; "0.0.0.0:7000", "[::]:7000", port 0 picks one.
  static Listener bind(const std::string& addr_port);
  // Error on timeout (-1 = wait forever).
  Channel accept(int timeout_ms);
  // The bound address with the actual port ("127.0.0.1:41234", "[::1]:41234").
  std::string address() const;
  int fd() const { return sock_.get(); }

 private:
  UniqueFd sock_;
};

// CLOCK_REALTIME in microseconds (a downtime spans two hosts' clocks).
uint64_t realtime_us();

// A Control message (what the `what`s mean: proto/migrate.proto).
mig::Envelope control(const std::string& what, uint64_t a = 0, uint64_t b = 0,
                      const std::string& text = "");

// Reads a key file: non-empty, at most 4096 bytes, one trailing newline
// dropped; Error naming the file otherwise.
std::string read_psk_file(const std::string& path);

struct PeerInfo {
  mig::Hello hello;
  // Peer CLOCK_REALTIME minus ours, from the fastest clock ping (source)
  // or the hello round trip (destination).
  int64_t clock_offset_us = 0;
};

// Both sides send Hello; then, if either has a key, each sends
// Auth{HMAC-SHA256(key, "ckpt-migrate-v1" | own role | own challenge |
// peer challenge)} and checks the peer's. On a mismatch or a missing key it
// sends Fail{"authentication failed"} and throws "authentication with PEER
// failed: wrong key" (or "the peer has no key" / "we have no key"). A Fail
// received is Error("PEER: text"); so is a different protocol version or
// both ends claiming the same role. 10 s per step. mine.challenge and
// hostname are filled in if empty; version, auth and realtime_us always.
// Both sides always send an Auth (mac empty without keys): its timestamps
// make a first round trip for clock_offset_us. Then the side whose role is
// "source" sends kClockPings Control{"clock", a: its time}, each answered
// at once with Control{"clock", a, b: time received, c: time sent}; the
// answer with the shortest round trip gives clock_offset_us.
PeerInfo handshake(Channel& ch, const mig::Hello& mine, const std::string& key);

// The wire encoding of one frame (for tests and the fuzzer).
std::string encode_frame(const mig::Envelope& m, const void* body = nullptr, size_t len = 0);
// Parses one frame from the front of buf. Returns the bytes it used, 0 if
// buf holds less than one whole frame; throws Error naming peer if the
// frame is invalid.
size_t decode_frame(const void* buf, size_t len, Frame& f, const std::string& peer);

}  // namespace ckpt::migrate
