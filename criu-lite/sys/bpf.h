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

// BTF (the format of /sys/kernel/btf/vmlinux): the id of the type of kind
// BTF_KIND_FUNC named `name`, or nullopt. Throws on a malformed blob.
std::optional<uint32_t> btf_find_func(std::string_view btf, std::string_view name);
// The same in the running kernel's BTF (nullopt if it has none).
std::optional<uint32_t> kernel_func_id(const char* name);

}  // namespace ckpt::bpf
