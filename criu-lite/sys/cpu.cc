#include "sys/cpu.h"

#include <cpuid.h>
#include <sys/auxv.h>

#include <cstring>
#include <string>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt::cpu {

uint64_t xcr0() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return 0;
  uint32_t lo, hi;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

uint32_t xstate_size() {
  unsigned a, b, c, d;
  if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d)) return 0;
  return b;
}

std::string_view vdso_text() {
  static std::string_view text = [] {
    auto base = getauxval(AT_SYSINFO_EHDR);
    if (!base) return std::string_view();
    std::string maps = read_file("/proc/self/maps");
    size_t pos = maps.find("[vdso]");
    if (pos == std::string::npos) return std::string_view();
    size_t line = maps.rfind('\n', pos);
    line = line == std::string::npos ? 0 : line + 1;
    unsigned long start = 0, end = 0;
    sscanf(maps.c_str() + line, "%lx-%lx", &start, &end);
    return std::string_view(reinterpret_cast<const char*>(start), end - start);
  }();
  return text;
}

uint64_t vdso_syscall_offset() {
  std::string_view t = vdso_text();
  for (size_t i = 0; i + 1 < t.size(); i++)
    if (static_cast<unsigned char>(t[i]) == 0x0f && static_cast<unsigned char>(t[i + 1]) == 0x05)
      return i;
  throw Error("no syscall instruction in the vDSO (is the vDSO disabled?)");
}

}  // namespace ckpt::cpu
