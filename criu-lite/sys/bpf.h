// The bpf() syscall, without libbpf: an array map, a program given as raw
// instructions, a tcx link; and the kernel's BTF, read to find the id of a
// kfunc. Thin wrappers, each throwing Error with the command's name; the
// programs themselves are in objects/ (objects/tcp_accept_queue.cc).
//
// Call order: map_create; prog_load (the program refers to the map by fd);
// link_tcx (in the network namespace of the device: the ifindex is looked
// up there); map_update / map_lookup at will; closing the link's fd
// detaches the program.
#pragma once

#include <linux/bpf.h>
#include <linux/btf.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sys/fd.h"

namespace ckpt::bpf {

// BPF_MAP_TYPE_ARRAY with u32 keys.
UniqueFd map_create_array(uint32_t value_size, uint32_t entries, const char* name);
void map_update(int map, uint32_t key, const void* value);
void map_lookup(int map, uint32_t key, void* value);

// BPF_PROG_LOAD; a refusal by the verifier throws with the end of its log.
UniqueFd prog_load(bpf_prog_type type, const std::vector<bpf_insn>& insns, const char* license,
                   const char* name);
// BPF_LINK_CREATE of a tcx program (attach_type CKPT_BPF_TCX_INGRESS or
// egress) on ifindex, appended after any other.
UniqueFd link_tcx(int prog, int ifindex, uint32_t attach_type);

// BPF_PROG_LOAD of a BPF_TRACE_ITER program for the iterator whose
// "bpf_iter_NAME" function has the BTF id attach_btf_id.
UniqueFd prog_load_iter(const std::vector<bpf_insn>& insns, uint32_t attach_btf_id,
                        const char* license, const char* name);
// BPF_LINK_CREATE of an iterator program over one task (iter_info.task.tid).
UniqueFd link_iter_task(int prog, pid_t tid);
// BPF_ITER_CREATE: a file whose read() runs the program.
UniqueFd iter_create(int link);

// BTF (the format of /sys/kernel/btf/vmlinux), indexed once; throws on a
// malformed blob.
class Btf {
 public:
  explicit Btf(std::string blob);
  // The running kernel's (nullopt if it has none).
  static std::optional<Btf> kernel();
  // The id of the first type of that kind (BTF_KIND_*) and name.
  std::optional<uint32_t> find(uint32_t kind, std::string_view name) const;
  // A member of the struct or union `id`, looked for through its anonymous
  // struct and union members too: byte offset and size (of what its type
  // resolves to through typedefs and qualifiers).
  struct Member {
    uint32_t offset = 0, size = 0;
  };
  std::optional<Member> member(uint32_t id, std::string_view name) const;

 private:
  const btf_type& type(uint32_t id) const;
  std::string_view name(uint32_t off) const;
  uint32_t size_of(uint32_t id) const;
  std::string blob_;
  std::string_view strings_;
  std::vector<size_t> at_;  // id -> offset of its btf_type in blob_ (id 0: void)
};

// The id of the BTF_KIND_FUNC type named `name`, or nullopt.
std::optional<uint32_t> btf_find_func(std::string_view btf, std::string_view name);
// The same in the running kernel's BTF (nullopt if it has none).
std::optional<uint32_t> kernel_func_id(const char* name);

}  // namespace ckpt::bpf
