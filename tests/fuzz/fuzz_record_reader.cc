// Feeds arbitrary bytes to RecordReader and parses each record into the
// message of the image's kind (every kind is covered). Any crash,
// over-read or exception other than ckpt::Error is a bug. Input layout: see
// fuzz_common.h.
#include <google/protobuf/stubs/logging.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core.pb.h"
#include "files.pb.h"
#include "fuzz_common.h"
#include "inventory.pb.h"
#include "ipc.pb.h"
#include "mm.pb.h"
#include "mnt.pb.h"
#include "namespaces.pb.h"
#include "netns.pb.h"
#include "pagemap.pb.h"
#include "pstree.pb.h"
#include "sockets.pb.h"
#include "tty.pb.h"

namespace {

using ckpt::image::Kind;

template <class Msg>
void read_all(const std::string& bytes, Kind kind) {
  try {
    ckpt::image::RecordReader r(ckpt::image::make_blob(bytes), "fuzz.img", kind);
    Msg msg;
    uint32_t n = 0;
    while (r.next(msg)) n++;
    if (n != r.count()) __builtin_trap();  // next() must yield exactly count() records
  } catch (const ckpt::Error&) {
  }
}

void read_as(const std::string& bytes, Kind kind) {
  switch (kind) {
    case Kind::Inventory:
      return read_all<ckpt::img::Inventory>(bytes, kind);
    case Kind::Pstree:
      return read_all<ckpt::img::PstreeEntry>(bytes, kind);
    case Kind::Core:
      return read_all<ckpt::img::TaskCore>(bytes, kind);
    case Kind::Mm:
      return read_all<ckpt::img::MmCore>(bytes, kind);
    case Kind::Pagemap:
      return read_all<ckpt::img::Pagemap>(bytes, kind);
    case Kind::Pages:
      return read_all<ckpt::img::Pagemap>(bytes, kind);  // holds no records
    case Kind::Files:
      return read_all<ckpt::img::FileDesc>(bytes, kind);
    case Kind::FdTable:
      return read_all<ckpt::img::FdTable>(bytes, kind);
    case Kind::PipeData:
      return read_all<ckpt::img::PipeData>(bytes, kind);
    case Kind::UnixQueues:
      return read_all<ckpt::img::UnixQueue>(bytes, kind);
    case Kind::Ghosts:
      return read_all<ckpt::img::Ghost>(bytes, kind);
    case Kind::Tty:
      return read_all<ckpt::img::TtyState>(bytes, kind);
    case Kind::InetQueues:
      return read_all<ckpt::img::InetQueue>(bytes, kind);
    case Kind::NetLock:
      return read_all<ckpt::img::NetLock>(bytes, kind);
    case Kind::IpcMsgs:
      return read_all<ckpt::img::IpcMessage>(bytes, kind);
    case Kind::Namespaces:
      return read_all<ckpt::img::NamespaceImages>(bytes, kind);
    case Kind::NetNs:
      return read_all<ckpt::img::NetNs>(bytes, kind);
    case Kind::MntNs:
      return read_all<ckpt::img::MntNs>(bytes, kind);
    case Kind::Tmpfs:
      return read_all<ckpt::img::TmpfsEntry>(bytes, kind);
  }
}

// Every kind gets its message parser fuzzed, but each input goes only to the
// kind its header names (the one reader that can get past the header) plus
// one other kind for the mismatch path: nine readers per input, eight of
// them throwing "wrong kind", cost most of the fuzzer's speed.
void read_as_its_kind(const std::string& bytes) {
  uint32_t k = 0;
  if (bytes.size() >= 8) memcpy(&k, bytes.data() + 4, 4);
  Kind kind = static_cast<Kind>(k);
  if (strcmp(ckpt::image::kind_name(kind), "unknown") != 0) read_as(bytes, kind);
  read_as(bytes, kind == Kind::Core ? Kind::Mm : Kind::Core);
}

}  // namespace

// Protobuf logs every string field that is not UTF-8; at thousands of inputs a
// second that is noise (and time), not a finding.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint8_t flags = data[0];
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (flags & ckpt::fuzz::kFixCrc) ckpt::fuzz::fix_record_crc(bytes);
  read_as_its_kind(bytes);
  return 0;
}
