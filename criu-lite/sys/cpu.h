// What this CPU and kernel offer that images depend on: XSAVE features and
// the vDSO text (a restored task keeps calling into the vDSO at the dumped
// address, so it must be the very same code).
#pragma once

#include <cstdint>
#include <string_view>

namespace ckpt::cpu {

uint64_t xcr0();         // enabled XSAVE features (0 without OSXSAVE)
uint32_t xstate_size();  // CPUID.(EAX=0xD,ECX=0).EBX
// Our own vDSO: its bytes (mapped at [vdso]).
std::string_view vdso_text();
// Offset of a `syscall` instruction inside the vDSO; throws if none.
uint64_t vdso_syscall_offset();

}  // namespace ckpt::cpu
