#include "sys/bpf.h"

#include <linux/btf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.h"

namespace ckpt::bpf {

namespace {

long sys_bpf(int cmd, bpf_attr* attr) {
  return syscall(SYS_bpf, cmd, attr, sizeof(*attr));
}

void set_name(char (&dst)[BPF_OBJ_NAME_LEN], const char* name) {
  strncpy(dst, name, BPF_OBJ_NAME_LEN - 1);
}

template <class T>
T read_at(std::string_view b, size_t off, const char* what) {
  if (off > b.size() || b.size() - off < sizeof(T)) throw Error(strfmt("BTF: truncated %s", what));
  T v;
  memcpy(&v, b.data() + off, sizeof(T));
  return v;
}

// Bytes that follow a btf_type of this kind (vlen entries for some).
size_t trailing(uint32_t kind, uint32_t vlen) {
  switch (kind) {
    case BTF_KIND_INT:
      return 4;
    case BTF_KIND_ARRAY:
      return sizeof(btf_array);
    case BTF_KIND_STRUCT:
    case BTF_KIND_UNION:
      return vlen * sizeof(btf_member);
    case BTF_KIND_ENUM:
      return vlen * sizeof(btf_enum);
    case BTF_KIND_FUNC_PROTO:
      return vlen * sizeof(btf_param);
    case BTF_KIND_VAR:
      return sizeof(btf_var);
    case BTF_KIND_DATASEC:
      return vlen * sizeof(btf_var_secinfo);
    case BTF_KIND_DECL_TAG:
      return sizeof(btf_decl_tag);
    case BTF_KIND_ENUM64:
      return vlen * sizeof(btf_enum64);
    case BTF_KIND_PTR:
    case BTF_KIND_FWD:
    case BTF_KIND_TYPEDEF:
    case BTF_KIND_VOLATILE:
    case BTF_KIND_CONST:
    case BTF_KIND_RESTRICT:
    case BTF_KIND_FUNC:
    case BTF_KIND_FLOAT:
    case BTF_KIND_TYPE_TAG:
      return 0;
  }
  throw Error(strfmt("BTF: unknown type kind %u", kind));
}

}  // namespace

UniqueFd map_create_array(uint32_t value_size, uint32_t entries, const char* name) {
  bpf_attr a{};
  a.map_type = BPF_MAP_TYPE_ARRAY;
  a.key_size = sizeof(uint32_t);
  a.value_size = value_size;
  a.max_entries = entries;
  set_name(a.map_name, name);
  long fd = sys_bpf(BPF_MAP_CREATE, &a);
  if (fd < 0) throw_errno(strfmt("bpf(BPF_MAP_CREATE) %s", name));
  return UniqueFd(static_cast<int>(fd));
}

void map_update(int map, uint32_t key, const void* value) {
  bpf_attr a{};
  a.map_fd = static_cast<uint32_t>(map);
  a.key = reinterpret_cast<uint64_t>(&key);
  a.value = reinterpret_cast<uint64_t>(value);
  a.flags = BPF_ANY;
  if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) != 0) throw_errno("bpf(BPF_MAP_UPDATE_ELEM)");
}

void map_lookup(int map, uint32_t key, void* value) {
  bpf_attr a{};
  a.map_fd = static_cast<uint32_t>(map);
  a.key = reinterpret_cast<uint64_t>(&key);
  a.value = reinterpret_cast<uint64_t>(value);
  if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) != 0) throw_errno("bpf(BPF_MAP_LOOKUP_ELEM)");
}

namespace {

UniqueFd load(bpf_prog_type type, const std::vector<bpf_insn>& insns, const char* license,
              const char* name, uint32_t attach_type, uint32_t attach_btf_id) {
  std::string log(64 * 1024, '\0');
  bpf_attr a{};
  a.prog_type = type;
  a.expected_attach_type = attach_type;
  a.attach_btf_id = attach_btf_id;
  a.insns = reinterpret_cast<uint64_t>(insns.data());
  a.insn_cnt = static_cast<uint32_t>(insns.size());
  a.license = reinterpret_cast<uint64_t>(license);
  a.log_buf = reinterpret_cast<uint64_t>(log.data());
  a.log_size = static_cast<uint32_t>(log.size());
  a.log_level = 1;
  set_name(a.prog_name, name);
  long fd = sys_bpf(BPF_PROG_LOAD, &a);
  if (fd >= 0) return UniqueFd(static_cast<int>(fd));
  int e = errno;
  log.resize(strnlen(log.data(), log.size()));
  while (!log.empty() && log.back() == '\n') log.pop_back();
  size_t cut = log.rfind('\n', log.size() > 400 ? log.size() - 400 : 0);
  std::string tail = log.size() > 400 ? log.substr(cut == std::string::npos ? 0 : cut + 1) : log;
  for (auto& c : tail)
    if (c == '\n') c = ';';
  throw_errno(e, strfmt("bpf(BPF_PROG_LOAD) %s%s%s", name,
                        tail.empty() ? "" : ": verifier: ", tail.c_str()));
}

}  // namespace

UniqueFd prog_load(bpf_prog_type type, const std::vector<bpf_insn>& insns, const char* license,
                   const char* name) {
  return load(type, insns, license, name, 0, 0);
}

UniqueFd link_tcx(int prog, int ifindex, uint32_t attach_type) {
  bpf_attr a{};
  a.link_create.prog_fd = static_cast<uint32_t>(prog);
  a.link_create.target_ifindex = static_cast<uint32_t>(ifindex);
  a.link_create.attach_type = static_cast<bpf_attach_type>(attach_type);
  long fd = sys_bpf(BPF_LINK_CREATE, &a);
  if (fd < 0) throw_errno(strfmt("bpf(BPF_LINK_CREATE) tcx on ifindex %d", ifindex));
  return UniqueFd(static_cast<int>(fd));
}

UniqueFd prog_load_iter(const std::vector<bpf_insn>& insns, uint32_t attach_btf_id,
                        const char* license, const char* name) {
  return load(BPF_PROG_TYPE_TRACING, insns, license, name, BPF_TRACE_ITER, attach_btf_id);
}

UniqueFd link_iter_task(int prog, pid_t tid) {
  bpf_iter_link_info info{};
  info.task.tid = static_cast<uint32_t>(tid);
  bpf_attr a{};
  a.link_create.prog_fd = static_cast<uint32_t>(prog);
  a.link_create.attach_type = BPF_TRACE_ITER;
  a.link_create.iter_info = reinterpret_cast<uint64_t>(&info);
  a.link_create.iter_info_len = sizeof(info);
  long fd = sys_bpf(BPF_LINK_CREATE, &a);
  if (fd < 0) throw_errno(strfmt("bpf(BPF_LINK_CREATE) iterator over tid %d", tid));
  return UniqueFd(static_cast<int>(fd));
}

UniqueFd iter_create(int link) {
  bpf_attr a{};
  a.iter_create.link_fd = static_cast<uint32_t>(link);
  long fd = sys_bpf(BPF_ITER_CREATE, &a);
  if (fd < 0) throw_errno("bpf(BPF_ITER_CREATE)");
  return UniqueFd(static_cast<int>(fd));
}

Btf::Btf(std::string blob) : blob_(std::move(blob)) {
  std::string_view b = blob_;
  auto hdr = read_at<btf_header>(b, 0, "header");
  if (hdr.magic != BTF_MAGIC) throw Error("BTF: bad magic");
  if (hdr.version != BTF_VERSION) throw Error(strfmt("BTF: version %u", hdr.version));
  size_t types = size_t{hdr.hdr_len} + hdr.type_off, strs = size_t{hdr.hdr_len} + hdr.str_off;
  if (types + hdr.type_len > b.size() || strs + hdr.str_len > b.size())
    throw Error("BTF: sections past the end");
  strings_ = b.substr(strs, hdr.str_len);
  at_.push_back(0);
  size_t pos = types, end = types + hdr.type_len;
  while (pos < end) {
    auto t = read_at<btf_type>(b, pos, "type");
    uint32_t kind = BTF_INFO_KIND(t.info), vlen = BTF_INFO_VLEN(t.info);
    at_.push_back(pos);
    pos += sizeof(btf_type) + trailing(kind, vlen);
    if (pos > end) throw Error("BTF: truncated type");
  }
}

std::optional<Btf> Btf::kernel() {
  std::string blob;
  if (!try_read_file("/sys/kernel/btf/vmlinux", &blob)) return std::nullopt;
  return Btf(std::move(blob));
}

const btf_type& Btf::type(uint32_t id) const {
  if (id == 0 || id >= at_.size()) throw Error(strfmt("BTF: no type %u", id));
  return *reinterpret_cast<const btf_type*>(blob_.data() + at_[id]);
}

std::string_view Btf::name(uint32_t off) const {
  if (off >= strings_.size()) throw Error("BTF: name offset past the strings");
  std::string_view rest = strings_.substr(off);
  size_t end = rest.find('\0');
  if (end == std::string_view::npos) throw Error("BTF: unterminated name");
  return rest.substr(0, end);
}

std::optional<uint32_t> Btf::find(uint32_t kind, std::string_view n) const {
  for (uint32_t id = 1; id < at_.size(); id++) {
    const btf_type& t = type(id);
    if (BTF_INFO_KIND(t.info) == kind && name(t.name_off) == n) return id;
  }
  return std::nullopt;
}

uint32_t Btf::size_of(uint32_t id) const {
  for (int hops = 0; hops < 32; hops++) {
    const btf_type& t = type(id);
    switch (BTF_INFO_KIND(t.info)) {
      case BTF_KIND_TYPEDEF:
      case BTF_KIND_VOLATILE:
      case BTF_KIND_CONST:
      case BTF_KIND_RESTRICT:
      case BTF_KIND_TYPE_TAG:
        id = t.type;
        continue;
      case BTF_KIND_PTR:
        return sizeof(void*);
      case BTF_KIND_ARRAY: {
        btf_array a;
        memcpy(&a, blob_.data() + at_[id] + sizeof(btf_type), sizeof a);
        return a.nelems * size_of(a.type);
      }
      default:
        return t.size;  // int, enum, struct, union, float
    }
  }
  throw Error(strfmt("BTF: type %u: typedef chain too long", id));
}

std::optional<Btf::Member> Btf::member(uint32_t id, std::string_view n) const {
  const btf_type& t = type(id);
  uint32_t kind = BTF_INFO_KIND(t.info);
  if (kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION) return std::nullopt;
  bool bitfields = BTF_INFO_KFLAG(t.info);
  for (uint32_t i = 0; i < BTF_INFO_VLEN(t.info); i++) {
    btf_member m;
    memcpy(&m, blob_.data() + at_[id] + sizeof(btf_type) + i * sizeof m, sizeof m);
    uint32_t bits = bitfields ? BTF_MEMBER_BIT_OFFSET(m.offset) : m.offset;
    if (bitfields && BTF_MEMBER_BITFIELD_SIZE(m.offset)) continue;
    if (m.name_off == 0) {  // anonymous struct or union: look inside
      uint32_t inner = m.type;
      while (BTF_INFO_KIND(type(inner).info) == BTF_KIND_TYPEDEF ||
             BTF_INFO_KIND(type(inner).info) == BTF_KIND_CONST ||
             BTF_INFO_KIND(type(inner).info) == BTF_KIND_VOLATILE)
        inner = type(inner).type;
      if (auto r = member(inner, n)) {
        r->offset += bits / 8;
        return r;
      }
      continue;
    }
    if (name(m.name_off) == n) return Member{bits / 8, size_of(m.type)};
  }
  return std::nullopt;
}

std::optional<uint32_t> btf_find_func(std::string_view b, std::string_view name) {
  return Btf(std::string(b)).find(BTF_KIND_FUNC, name);
}

std::optional<uint32_t> kernel_func_id(const char* name) {
  std::optional<Btf> btf = Btf::kernel();
  if (!btf) return std::nullopt;
  return btf->find(BTF_KIND_FUNC, name);
}

}  // namespace ckpt::bpf
