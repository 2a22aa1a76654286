// The mappings of a stopped process with their VmFlags, without smaps.
//
// /proc/PID/smaps is the only file that shows a mapping's flags (VM_DONTCOPY,
// VM_LOCKED, the userfaultfd registrations, ...), and reading it walks every
// page table entry of the process to count pages: 10 ms per GiB, paid while
// the tree is stopped. A BPF task-VMA iterator reads vm_start, vm_end and
// vm_flags straight from each vm_area_struct instead; /proc/PID/maps (no
// page walk) gives the rest of each line.
//
// vm_flags are kernel-internal bits, so prepare() checks the bit of every
// two-letter code ckpt uses against smaps on mappings it makes in itself
// for the purpose (DONTFORK, DONTDUMP, WIPEONFORK, SEQUENTIAL, RANDOM,
// (NO)HUGEPAGE, mlock, MAP_GROWSDOWN, userfaultfd registrations). Any
// difference, or a kernel without BTF or task-VMA iterators, and read()
// says no: callers go on with smaps.
//
// Call order: prepare() before the tree stops (loading the program and the
// check take a few ms, once per ckpt process); read() per stopped process.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "sys/proc.h"

namespace ckpt::vma_flags {

// Whether read() can be used; the reason it cannot is logged once (-v).
bool prepare();

// What smaps would list (without its page counts), or nullopt if prepare()
// failed or the iterator and /proc/PID/maps disagree on the mappings.
std::optional<std::vector<proc::Vma>> read(pid_t pid);

// The two-letter smaps codes of vm_flags bits (the ones ckpt knows).
std::vector<std::string> codes(uint64_t vm_flags);

}  // namespace ckpt::vma_flags
