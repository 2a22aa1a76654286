#include "restore/stub_program.h"

#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "sys/error.h"
#include "sys/uapi.h"

namespace ckpt {

UniqueFd make_stub_program() {
  // argv[1] has one character per fd number, '1' where the fd is to be
  // close-on-exec (the stub installed every fd without it, or the execve
  // would have closed them). Then the fd right after the last number is
  // closed: that tells the controller the stub is done (the write end of a
  // pipe, stubs.h). Then it parks.
  //   _start: mov r12, [rsp+16]          ; argv[1]
  //           test r12, r12 ; jz park
  //           xor r13d, r13d             ; fd = 0
  //   loop:   movzx eax, byte [r12+r13] ; test al, al ; jz done
  //           cmp al, '1' ; jne next
  //           fcntl(r13d, F_SETFD, FD_CLOEXEC)
  //   next:   inc r13d ; jmp loop
  //   done:   close(r13d + 1)
  //   park:   pause() ; jmp park
  static const uint8_t kCode[] = {
      0x4c, 0x8b, 0x64, 0x24, 0x10,              // mov r12, [rsp+16]
      0x4d, 0x85, 0xe4,                          // test r12, r12
      0x74, 0x34,                                // jz park
      0x45, 0x31, 0xed,                          // xor r13d, r13d
      0x43, 0x0f, 0xb6, 0x04, 0x2c,              // loop: movzx eax, byte [r12+r13]
      0x84, 0xc0,                                // test al, al
      0x74, 0x1d,                                // jz done
      0x3c, 0x31,                                // cmp al, '1'
      0x75, 0x14,                                // jne next
      0x44, 0x89, 0xef,                          // mov edi, r13d
      0xbe, 0x02, 0x00, 0x00, 0x00,              // mov esi, F_SETFD
      0xba, 0x01, 0x00, 0x00, 0x00,              // mov edx, FD_CLOEXEC
      0xb8, 0x48, 0x00, 0x00, 0x00,              // mov eax, __NR_fcntl
      0x0f, 0x05,                                // syscall
      0x41, 0xff, 0xc5,                          // next: inc r13d
      0xeb, 0xda,                                // jmp loop
      0x41, 0x8d, 0x7d, 0x01,                    // done: lea edi, [r13+1]
      0xb8, 0x03, 0x00, 0x00, 0x00,              // mov eax, __NR_close
      0x0f, 0x05,                                // syscall
      0xb8, 0x22, 0x00, 0x00, 0x00,              // park: mov eax, __NR_pause
      0x0f, 0x05,                                // syscall
      0xeb, 0xf7,                                // jmp park
  };
  struct Headers {
    Elf64_Ehdr eh;
    Elf64_Phdr ph[2];
  } h{};
  constexpr size_t kSize = sizeof(Headers) + sizeof kCode;
  memcpy(h.eh.e_ident, ELFMAG, SELFMAG);
  h.eh.e_ident[EI_CLASS] = ELFCLASS64;
  h.eh.e_ident[EI_DATA] = ELFDATA2LSB;
  h.eh.e_ident[EI_VERSION] = EV_CURRENT;
  h.eh.e_ident[EI_OSABI] = ELFOSABI_SYSV;
  h.eh.e_type = ET_EXEC;
  h.eh.e_machine = EM_X86_64;
  h.eh.e_version = EV_CURRENT;
  h.eh.e_entry = kStubProgramAddr + sizeof(Headers);  // the code follows the headers
  h.eh.e_phoff = offsetof(Headers, ph);
  h.eh.e_ehsize = sizeof(Elf64_Ehdr);
  h.eh.e_phentsize = sizeof(Elf64_Phdr);
  h.eh.e_phnum = 2;
  h.ph[0].p_type = PT_LOAD;  // the whole file, one read-execute page
  h.ph[0].p_flags = PF_R | PF_X;
  h.ph[0].p_vaddr = h.ph[0].p_paddr = kStubProgramAddr;
  h.ph[0].p_filesz = h.ph[0].p_memsz = kSize;
  h.ph[0].p_align = 0x1000;
  // A non-executable stack, as every program built today declares: without
  // it the kernel may give the process READ_IMPLIES_EXEC.
  h.ph[1].p_type = PT_GNU_STACK;
  h.ph[1].p_flags = PF_R | PF_W;
  uint8_t img[kSize];
  memcpy(img, &h, sizeof h);
  memcpy(img + sizeof h, kCode, sizeof kCode);

  int fd = memfd_create("ckpt-stub", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
  if (fd < 0 && errno == EINVAL)  // a kernel before 6.3
    fd = memfd_create("ckpt-stub", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw_errno("memfd_create for the restore stubs' program");
  UniqueFd owner(fd);
  write_full(fd, &img, sizeof img, "restore stubs' program");
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) != 0)
    throw_errno("seal the restore stubs' program");
  return owner;
}

}  // namespace ckpt
