// Feeds arbitrary bytes as a migration stream: decode_frame() over the
// buffer, and Channel::recv() over a socket carrying the same bytes, every
// frame that parses going into a SetReceiver. Any crash, over-read or
// exception other than ckpt::Error is a bug.
#include <google/protobuf/stubs/logging.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "migrate/net_images.h"
#include "migrate/transport.h"
#include "sys/error.h"
#include "sys/fd.h"

namespace {

void through_buffer(const uint8_t* data, size_t size) {
  ckpt::migrate::SetReceiver r("fuzz");
  ckpt::migrate::Frame f;
  size_t off = 0;
  try {
    while (size_t n = ckpt::migrate::decode_frame(data + off, size - off, f, "fuzz")) {
      if (n > size - off) __builtin_trap();
      off += n;
      r.feed(f);
      r.take_committed();
    }
  } catch (const ckpt::Error&) {
  }
}

// Inputs are capped by -max_len well below a socket buffer, so one write
// never blocks.
void through_socket(const uint8_t* data, size_t size) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) __builtin_trap();
  ckpt::migrate::Channel ch(ckpt::UniqueFd(sv[0]), "fuzz");
  if (size > 0 && write(sv[1], data, size) != static_cast<ssize_t>(size)) __builtin_trap();
  close(sv[1]);
  ckpt::migrate::SetReceiver r("fuzz");
  ckpt::migrate::Frame f;
  try {
    while (r.recv(ch, f, 0)) r.feed(f);
  } catch (const ckpt::Error&) {
  }
}

}  // namespace

// Headers with invalid UTF-8 in a string field fail to parse (an Error);
// protobuf would also log each one.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  through_buffer(data, size);
  through_socket(data, size);
  return 0;
}
