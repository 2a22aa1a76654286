// BTF parsing (sys/bpf.h): a hand-made blob, bad ones, and the kernel's own.
#include <gtest/gtest.h>
#include <linux/btf.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "sys/bpf.h"
#include "sys/error.h"

namespace ckpt {
namespace {

// linux/btf.h has the decoders only.
constexpr uint32_t info(uint32_t kind, uint32_t vlen) {
  return kind << 24 | vlen;
}

// Types: 1 int, 2 func_proto (int, 2 params), 3 func "other", 4 struct
// "foo" (1 member), 5 func "foo".
class BtfBlob {
 public:
  BtfBlob() {
    strings_ = std::string("\0int\0other\0foo\0a\0", 17);
    add({name("int"), info(BTF_KIND_INT, 0), 4}, std::string(4, '\0'));
    add({0, info(BTF_KIND_FUNC_PROTO, 2), 1}, std::string(2 * sizeof(btf_param), '\0'));
    add({name("other"), info(BTF_KIND_FUNC, 0), 2}, "");
    add({name("foo"), info(BTF_KIND_STRUCT, 1), 4}, std::string(sizeof(btf_member), '\0'));
    add({name("foo"), info(BTF_KIND_FUNC, 0), 2}, "");
  }
  std::string bytes() const {
    btf_header h{};
    h.magic = BTF_MAGIC;
    h.version = BTF_VERSION;
    h.hdr_len = sizeof(h);
    h.type_off = 0;
    h.type_len = static_cast<uint32_t>(types_.size());
    h.str_off = h.type_len;
    h.str_len = static_cast<uint32_t>(strings_.size());
    return std::string(reinterpret_cast<const char*>(&h), sizeof(h)) + types_ + strings_;
  }

 private:
  uint32_t name(const char* n) const {
    return static_cast<uint32_t>(strings_.find(std::string(n) + '\0', 1));
  }
  void add(btf_type t, const std::string& extra) {
    types_ += std::string(reinterpret_cast<const char*>(&t), sizeof(t)) + extra;
  }
  std::string types_, strings_;
};

TEST(Btf, FindsAFuncByName) {
  std::string b = BtfBlob().bytes();
  EXPECT_EQ(bpf::btf_find_func(b, "foo"), 5u);  // not the struct of that name
  EXPECT_EQ(bpf::btf_find_func(b, "other"), 3u);
  EXPECT_EQ(bpf::btf_find_func(b, "int"), std::nullopt);
  EXPECT_EQ(bpf::btf_find_func(b, "missing"), std::nullopt);
}

TEST(Btf, BadMagic) {
  std::string b = BtfBlob().bytes();
  b[0] ^= 1;
  EXPECT_THROW(bpf::btf_find_func(b, "foo"), Error);
}

TEST(Btf, Truncated) {
  std::string b = BtfBlob().bytes();
  EXPECT_THROW(bpf::btf_find_func(b.substr(0, b.size() - 4), "foo"), Error);
  EXPECT_THROW(bpf::btf_find_func(b.substr(0, 10), "foo"), Error);
}

TEST(Btf, UnknownKind) {
  std::string b = BtfBlob().bytes();
  btf_type t;
  memcpy(&t, b.data() + sizeof(btf_header), sizeof(t));
  t.info = info(31, 0);
  memcpy(b.data() + sizeof(btf_header), &t, sizeof(t));
  EXPECT_THROW(bpf::btf_find_func(b, "foo"), Error);
}

TEST(Btf, KernelHasTheKfuncs) {
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) GTEST_SKIP() << "no kernel BTF";
  EXPECT_TRUE(bpf::kernel_func_id("bpf_sk_assign_tcp_reqsk").has_value());
  EXPECT_FALSE(bpf::kernel_func_id("ckpt_no_such_function").has_value());
}

TEST(Btf, KernelStructMembers) {
  auto btf = bpf::Btf::kernel();
  if (!btf) GTEST_SKIP() << "no kernel BTF";
  auto vma = btf->find(BTF_KIND_STRUCT, "vm_area_struct");
  ASSERT_TRUE(vma.has_value());
  // vm_start sits in an anonymous struct inside an anonymous union,
  // vm_flags in an anonymous union.
  auto start = btf->member(*vma, "vm_start"), end = btf->member(*vma, "vm_end"),
       flags = btf->member(*vma, "vm_flags");
  ASSERT_TRUE(start && end && flags);
  EXPECT_EQ(start->size, 8u);
  EXPECT_EQ(end->offset, start->offset + 8);
  EXPECT_EQ(flags->size, 8u);
  EXPECT_GT(flags->offset, end->offset);
  EXPECT_FALSE(btf->member(*vma, "no_such_member").has_value());
}

}  // namespace
}  // namespace ckpt
