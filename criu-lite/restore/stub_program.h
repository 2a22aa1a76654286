// The program a restore stub executes once it has done what only ordinary
// code can do (sessions, groups, fds): a few bytes that park in pause().
//
// Why: a stub starts as a fork of ckpt, whose address space (its libraries,
// heap and loaded images) every fork copies and the rebuild then unmaps page
// table by page table. Executing this program gives each stub an address
// space of one page plus the kernel's special mappings, torn down by the
// stub itself while the stubs still run in parallel, so the rebuild starts
// from nearly nothing.
#pragma once

#include <cstdint>

#include "sys/fd.h"

namespace ckpt {

// A sealed memfd holding the program (a static x86-64 ELF, built here: no
// file on disk is needed inside the tree's mount namespace). Its argv[1]
// holds one character per fd number from 0, '1' for each fd to be made
// close-on-exec; it sets those flags, closes the fd numbered
// strlen(argv[1]) + 1 (to say it is done), then parks in pause().
UniqueFd make_stub_program();

// Where the program's one page is mapped: a stub whose registers are not in
// it has not executed the program yet.
constexpr uint64_t kStubProgramAddr = 0x400000;

}  // namespace ckpt
