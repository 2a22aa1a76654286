// A tiny assembler for the BPF programs ckpt loads without libbpf
// (objects/tcp_accept_queue.cc, objects/vma_flags.cc): one method per
// instruction form they use, and forward jumps to labels.
#pragma once

#include <linux/bpf.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace ckpt::bpf {

inline bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

class Asm {
 public:
  void mov(uint8_t d, uint8_t s) { emit(insn(BPF_ALU64 | BPF_MOV | BPF_X, d, s, 0, 0)); }
  void movi(uint8_t d, int32_t imm) { emit(insn(BPF_ALU64 | BPF_MOV | BPF_K, d, 0, 0, imm)); }
  void addi(uint8_t d, int32_t imm) { emit(insn(BPF_ALU64 | BPF_ADD | BPF_K, d, 0, 0, imm)); }
  void ldxw(uint8_t d, uint8_t s, int16_t off) {
    emit(insn(BPF_LDX | BPF_MEM | BPF_W, d, s, off, 0));
  }
  void ldxdw(uint8_t d, uint8_t s, int16_t off) {
    emit(insn(BPF_LDX | BPF_MEM | BPF_DW, d, s, off, 0));
  }
  void stw(uint8_t d, int16_t off, int32_t imm) {
    emit(insn(BPF_ST | BPF_MEM | BPF_W, d, 0, off, imm));
  }
  void stxw(uint8_t d, int16_t off, uint8_t s) {
    emit(insn(BPF_STX | BPF_MEM | BPF_W, d, s, off, 0));
  }
  void stxdw(uint8_t d, int16_t off, uint8_t s) {
    emit(insn(BPF_STX | BPF_MEM | BPF_DW, d, s, off, 0));
  }
  void ld_map(uint8_t d, int fd) {
    emit(insn(BPF_LD | BPF_DW | BPF_IMM, d, BPF_PSEUDO_MAP_FD, 0, fd));
    emit(insn(0, 0, 0, 0, 0));
  }
  void call(int32_t helper) { emit(insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper)); }
  void kcall(uint32_t btf_id) {
    emit(insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, static_cast<int32_t>(btf_id)));
  }
  void exit() { emit(insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)); }
  // Conditional jumps to a label defined later.
  void jnei(uint8_t d, int32_t imm, int label) { jump(BPF_JNE, d, imm, label); }
  void jeqi(uint8_t d, int32_t imm, int label) { jump(BPF_JEQ, d, imm, label); }
  void label(int l) {
    for (auto& [at, target] : fixups_)
      if (target == l) code_[at].off = static_cast<int16_t>(code_.size() - at - 1);
  }
  const std::vector<bpf_insn>& code() const { return code_; }

 private:
  void emit(bpf_insn i) { code_.push_back(i); }
  void jump(uint8_t op, uint8_t d, int32_t imm, int l) {
    fixups_.push_back({code_.size(), l});
    emit(insn(BPF_JMP | op | BPF_K, d, 0, 0, imm));
  }
  std::vector<bpf_insn> code_;
  std::vector<std::pair<size_t, int>> fixups_;
};

}  // namespace ckpt::bpf
