#include <dirent.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "core.pb.h"
#include "files.pb.h"
#include "image/record_file.h"
#include "inventory.pb.h"
#include "ipc.pb.h"
#include "mm.pb.h"
#include "mnt.pb.h"
#include "namespaces.pb.h"
#include "netns.pb.h"
#include "pagemap.pb.h"
#include "pstree.pb.h"
#include "sys/error.h"
#include "tty.pb.h"

namespace ckpt::cli {

namespace {

std::unique_ptr<google::protobuf::Message> message_for(image::Kind k) {
  switch (k) {
    case image::Kind::Inventory:
      return std::make_unique<img::Inventory>();
    case image::Kind::Pstree:
      return std::make_unique<img::PstreeEntry>();
    case image::Kind::Core:
      return std::make_unique<img::TaskCore>();
    case image::Kind::Mm:
      return std::make_unique<img::MmCore>();
    case image::Kind::Pagemap:
      return std::make_unique<img::Pagemap>();
    case image::Kind::Files:
      return std::make_unique<img::FileDesc>();
    case image::Kind::FdTable:
      return std::make_unique<img::FdTable>();
    case image::Kind::PipeData:
      return std::make_unique<img::PipeData>();
    case image::Kind::Ghosts:
      return std::make_unique<img::Ghost>();
    case image::Kind::UnixQueues:
      return std::make_unique<img::UnixQueue>();
    case image::Kind::IpcMsgs:
      return std::make_unique<img::IpcMessage>();
    case image::Kind::Namespaces:
      return std::make_unique<img::NamespaceImages>();
    case image::Kind::MntNs:
      return std::make_unique<img::MntNs>();
    case image::Kind::Tmpfs:
      return std::make_unique<img::TmpfsEntry>();
    case image::Kind::NetNs:
      return std::make_unique<img::NetNs>();
    case image::Kind::Tty:
      return std::make_unique<img::TtyState>();
    case image::Kind::InetQueues:
      return std::make_unique<img::InetQueue>();
    case image::Kind::NetLock:
      return std::make_unique<img::NetLock>();
    default:
      return nullptr;
  }
}

// The kind an image file says it is (its header), or 0.
uint32_t header_kind(const image::Blob& b) {
  if (b.size() < 16) return 0;
  uint32_t magic, kind;
  memcpy(&magic, b.data(), 4);
  memcpy(&kind, b.data() + 4, 4);
  return magic == image::kMagic ? kind : 0;
}

std::string to_json(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = false;
  o.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(m, &out, o);
  if (!st.ok()) throw Error("JSON conversion failed: " + st.ToString());
  return out;
}

// One image as JSON: an object for single-record images, else an array.
std::string show_image(const image::ImageSource& src, const std::string& name) {
  auto blob = src.open(name);
  uint32_t kind = header_kind(*blob);
  if (kind == 0) throw Error("image " + name + ": not a ckpt image");
  auto k = static_cast<image::Kind>(kind);
  if (k == image::Kind::Pages) return strfmt("{\"kind\": \"pages\", \"bytes\": %zu}", blob->size());
  auto msg = message_for(k);
  if (!msg) throw Error(strfmt("image %s: unknown kind %u", name.c_str(), kind));
  image::RecordReader r(src, name, k);
  std::vector<std::string> recs;
  while (r.next(*msg)) recs.push_back(to_json(*msg));
  bool single = k == image::Kind::Inventory || k == image::Kind::Core || k == image::Kind::Mm ||
                k == image::Kind::Pagemap || k == image::Kind::FdTable || k == image::Kind::MntNs;
  if (single && recs.size() == 1) return recs[0];
  std::string out = "[";
  for (size_t i = 0; i < recs.size(); i++) out += (i ? ",\n " : "") + recs[i];
  return out + "]";
}

}  // namespace

int cmd_show(const Args& args) {
  Common common;
  std::string dir, image_name;
  po::options_description desc("show");
  desc.add_options()("images-dir,D", po::value<std::string>(&dir)->required(), "image directory")(
      "image", po::value<std::string>(&image_name), "one image");
  add_common(desc, common);
  po::positional_options_description pos;
  pos.add("image", 1);
  po::variables_map vm;
  if (!parse(args, desc, &pos, vm, "show")) return 0;
  apply_common(common);
  image::DirSource src(dir);
  if (!image_name.empty()) {
    printf("%s\n", show_image(src, image_name).c_str());
    return 0;
  }
  std::vector<std::string> names;
  DIR* d = opendir(dir.c_str());
  if (!d) throw_errno("open " + dir);
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n.size() > 4 && n.compare(n.size() - 4, 4, ".img") == 0 && n[0] != '.') names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  printf("{\n");
  for (size_t i = 0; i < names.size(); i++)
    printf("\"%s\": %s%s\n", names[i].c_str(), show_image(src, names[i]).c_str(),
           i + 1 < names.size() ? "," : "");
  printf("}\n");
  return 0;
}

}  // namespace ckpt::cli
