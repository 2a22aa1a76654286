// Named fault points: CKPT_FAULT=NAME in the environment makes the step of
// that name fail with an Error, so tests can prove that a dump failing there
// leaves the tree running and a restore failing there leaves nothing behind.
#pragma once

namespace ckpt::fault {

// Throws Error("injected fault NAME") when CKPT_FAULT equals name.
void point(const char* name);
// Whether CKPT_FAULT equals name, for faults that are not errors (a stale
// preview, ...): the caller does what the fault stands for.
bool armed(const char* name);

}  // namespace ckpt::fault
