// Tests for sys/proc: each parser on text captured from a real kernel
// (tests/unit/testdata, see the comments at each suite for how it was made),
// on malformed text (must throw Error, never crash), and on the live /proc
// files of this test process.
#include "sys/proc.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "sys/error.h"
#include "sys/fd.h"

namespace ckpt::proc {
namespace {

std::string testdata(const std::string& name) {
  return read_file(std::string(CKPT_TESTDATA) + "/" + name);
}

// The message of the Error that f throws ("" and a test failure if none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no Error thrown";
  return "";
}

#define EXPECT_PARSE_ERROR(expr, substr)                     \
  do {                                                       \
    std::string msg_ = error_of([&] { (void)(expr); });      \
    EXPECT_NE(msg_.find(substr), std::string::npos) << msg_; \
  } while (0)

// Feeds parse every prefix (with a stride for big texts) and many byte-level
// mutations of text: each must parse or throw Error, nothing else (and, under
// ASan, read nothing out of bounds). Returns how many inputs threw.
template <class F>
int hammer(const std::string& text, F parse) {
  int errors = 0;
  auto one = [&](std::string_view in) {
    try {
      parse(in);
    } catch (const Error&) {
      errors++;
    }
  };
  size_t stride = text.size() > 4096 ? 13 : 1;
  for (size_t n = 0; n < text.size(); n += stride) {
    // A copy of exactly n bytes so ASan sees any read past its end.
    std::string prefix = text.substr(0, n);
    one(prefix);
  }
  std::mt19937 rng(12345);
  const char kBytes[] = {' ', '\n', ':', '-', '(', ')', '\0', 'x', '9', '\t', '\\', '\xff'};
  for (int i = 0; i < 400 && !text.empty(); i++) {
    std::string m = text;
    for (int k = 0; k < 3; k++) {
      size_t at = rng() % m.size();
      switch (rng() % 3) {
        case 0:
          m[at] = kBytes[rng() % sizeof kBytes];
          break;
        case 1:
          m.erase(at, 1 + rng() % 8);
          break;
        default:
          m.insert(at, 1, kBytes[rng() % sizeof kBytes]);
          break;
      }
      if (m.empty()) break;
    }
    one(m);
  }
  return errors;
}

// ---- stat: captured from a process whose comm was set (PR_SET_NAME) to
// "x) (y z", and from /bin/sleep copied to "/tmp/proccap/a b) c".

TEST(ProcStat, CommWithParensAndSpaces) {
  Stat st = parse_stat(testdata("stat_comm_parens.txt"));
  EXPECT_EQ(st.pid, 3574);
  EXPECT_EQ(st.comm, "x) (y z");
  EXPECT_EQ(st.state, 'S');
  EXPECT_EQ(st.ppid, 3564);
  EXPECT_EQ(st.pgrp, 3564);
  EXPECT_EQ(st.session, 2733);
  EXPECT_EQ(st.tty_nr, 0);
  EXPECT_EQ(st.tpgid, -1);
  EXPECT_EQ(st.flags, 4194304u);
  EXPECT_EQ(st.num_threads, 3);
  EXPECT_EQ(st.starttime, 31036u);
  EXPECT_EQ(st.start_code, 94676287844352u);
  EXPECT_EQ(st.end_code, 94676287850621u);
  EXPECT_EQ(st.start_stack, 140736492844688u);
  EXPECT_EQ(st.exit_signal, 17);
  EXPECT_EQ(st.start_data, 94676287860144u);
  EXPECT_EQ(st.end_data, 94676287861120u);
  EXPECT_EQ(st.start_brk, 94676429623296u);
  EXPECT_EQ(st.arg_start, 140736492845524u);
  EXPECT_EQ(st.arg_end, 140736492845534u);
  EXPECT_EQ(st.env_start, 140736492845534u);
  EXPECT_EQ(st.env_end, 140736492847090u);
  EXPECT_EQ(st.exit_code, 0);
}

TEST(ProcStat, ExeNameWithParen) {
  Stat st = parse_stat(testdata("stat_sleep.txt"));
  EXPECT_EQ(st.pid, 4172);
  EXPECT_EQ(st.comm, "a b) c");
  EXPECT_EQ(st.ppid, 4157);
  EXPECT_EQ(st.num_threads, 1);
  EXPECT_EQ(st.env_end, 140734300651492u);
}

// Captured from `sleep` started in a new session whose controlling terminal
// is /dev/pts/0 (TIOCSCTTY), so it is the terminal's foreground group too.
TEST(ProcStat, ControllingTerminal) {
  Stat st = parse_stat(testdata("stat_ctty.txt"));
  EXPECT_EQ(st.pid, 12357);
  EXPECT_EQ(st.session, 12357);
  EXPECT_EQ(st.tty_nr, 34816);  // 136:0
  EXPECT_EQ(st.tpgid, 12357);
}

TEST(ProcStat, EmptyCommAndNegativeFields) {
  std::string fields;
  for (int i = 3; i <= 52; i++) fields += i == 3 ? "Z" : i == 8 ? " -1" : " " + std::to_string(i);
  Stat st = parse_stat("7 () " + fields + "\n");
  EXPECT_EQ(st.comm, "");
  EXPECT_EQ(st.state, 'Z');
  EXPECT_EQ(st.ppid, 4);
  EXPECT_EQ(st.tty_nr, 7);
  EXPECT_EQ(st.tpgid, -1);
  EXPECT_EQ(st.exit_code, 52);
}

TEST(ProcStat, Malformed) {
  EXPECT_PARSE_ERROR(parse_stat(""), "stat: no '(comm)'");
  EXPECT_PARSE_ERROR(parse_stat("123"), "stat: no '(comm)'");
  EXPECT_PARSE_ERROR(parse_stat("123 (foo"), "stat: no '(comm)'");
  EXPECT_PARSE_ERROR(parse_stat("123 foo) ("), "stat: no '(comm)'");
  EXPECT_PARSE_ERROR(parse_stat("abc (foo) S 1"), "stat: bad pid 'abc'");
  EXPECT_PARSE_ERROR(parse_stat("123 (foo) S 1 2 3"), "stat: truncated: 6 fields, want 52");
  std::string good = testdata("stat_comm_parens.txt");
  std::string bad = good;
  bad.replace(bad.find(" 31036 "), 7, " 31x36 ");
  EXPECT_PARSE_ERROR(parse_stat(bad), "stat: field 22 (starttime): bad number '31x36'");
  bad = good;
  bad.replace(bad.find(") S "), 4, ") SS ");
  EXPECT_PARSE_ERROR(parse_stat(bad), "field 3 (state): bad state 'SS'");
  bad = good;
  bad.replace(bad.find(" 94676287844352 "), 16, " 99999999999999999999999 ");
  EXPECT_PARSE_ERROR(parse_stat(bad), "field 26 (startcode): bad number");
  // Every strict prefix that cuts a field off is truncated.
  std::string line = good.substr(0, good.find('\n'));
  for (size_t n = 0; n + 1 < line.size(); n++)
    EXPECT_THROW(parse_stat(line.substr(0, n)), Error) << n;
  EXPECT_NO_THROW(parse_stat(line));
  hammer(good, [](std::string_view s) { parse_stat(s); });
}

// ---- status: status_threads.txt is the 3-thread process above (signals
// blocked, ignored, caught and one pending); status_pidns.txt a child in a new
// pid namespace after setgroups, setresuid(1000, 1001, 0), setresgid(1, 2, 3),
// no_new_privs, two seccomp filters and umask(0).

TEST(ProcStatus, MultiThreaded) {
  Status st = parse_status(testdata("status_threads.txt"));
  EXPECT_EQ(st.name, "x) (y z");
  EXPECT_EQ(st.umask, 027u);
  EXPECT_EQ(st.state, 'S');
  EXPECT_EQ(st.tgid, 3574);
  EXPECT_EQ(st.pid, 3574);
  EXPECT_EQ(st.ppid, 3564);
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(st.uid[i], 0u);
    EXPECT_EQ(st.gid[i], 0u);
  }
  EXPECT_TRUE(st.groups.empty());
  EXPECT_EQ(st.nstgid, std::vector<pid_t>{3574});
  EXPECT_EQ(st.nspid, std::vector<pid_t>{3574});
  EXPECT_EQ(st.nspgid, std::vector<pid_t>{3564});
  EXPECT_EQ(st.nssid, std::vector<pid_t>{2733});
  EXPECT_EQ(st.threads, 3);
  EXPECT_EQ(st.sig_pnd, 0u);
  EXPECT_EQ(st.shd_pnd, 0x200u);  // SIGUSR1
  EXPECT_EQ(st.sig_blk, 0x14200u);
  EXPECT_EQ(st.sig_ign, 0x7u);
  EXPECT_EQ(st.sig_cgt, 0x100000000u);
  EXPECT_EQ(st.cap_inh, 0u);
  EXPECT_EQ(st.cap_prm, 0x1fffeffffffu);
  EXPECT_EQ(st.cap_eff, 0x1fffeffffffu);
  EXPECT_EQ(st.cap_bnd, 0x1fffeffffffu);
  EXPECT_EQ(st.cap_amb, 0u);
  EXPECT_EQ(st.no_new_privs, 0);
  EXPECT_EQ(st.seccomp, 0);
  EXPECT_EQ(st.seccomp_filters, 0);
}

TEST(ProcStatus, PidNamespaceIdsSeccomp) {
  Status st = parse_status(testdata("status_pidns.txt"));
  EXPECT_EQ(st.umask, 0u);
  const uint32_t uid[4] = {1000, 1001, 0, 1001}, gid[4] = {1, 2, 3, 2};
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(st.uid[i], uid[i]) << i;
    EXPECT_EQ(st.gid[i], gid[i]) << i;
  }
  EXPECT_EQ(st.groups, (std::vector<uint32_t>{10, 20, 1000, 65534}));
  EXPECT_EQ(st.nstgid, (std::vector<pid_t>{4167, 1}));
  EXPECT_EQ(st.nspid, (std::vector<pid_t>{4167, 1}));
  EXPECT_EQ(st.nspgid, (std::vector<pid_t>{4157, 0}));
  EXPECT_EQ(st.nssid, (std::vector<pid_t>{2733, 0}));
  EXPECT_EQ(st.no_new_privs, 1);
  EXPECT_EQ(st.seccomp, 2);
  EXPECT_EQ(st.seccomp_filters, 2);
}

const char kMinimalStatus[] =
    "State:\tR (running)\nTgid:\t5\nPid:\t5\nPPid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";

TEST(ProcStatus, NameEscapesAndBlanks) {
  Status st = parse_status(std::string("Name:\ta\\nb\\\\c \n") + kMinimalStatus);
  EXPECT_EQ(st.name, "a\nb\\c ");
  EXPECT_EQ(st.state, 'R');
}

TEST(ProcStatus, Malformed) {
  std::string ok = std::string("Name:\tx\n") + kMinimalStatus;
  EXPECT_NO_THROW(parse_status(ok));
  EXPECT_PARSE_ERROR(parse_status(""), "status: no 'Name:' line");
  EXPECT_PARSE_ERROR(parse_status("garbage"),
                     "status: line 1: expected 'Key: value', got 'garbage'");
  EXPECT_PARSE_ERROR(
      parse_status(std::string("Name:\tx\n") + "State:\tR\nTgid:\t5\nPid:\t5\nPPid:\t1\n"),
      "status: no 'Uid:' line");
  EXPECT_PARSE_ERROR(parse_status(ok + "Uid:\t1\t2\t3\n"),
                     "status: line 8: Uid: bad value '1\\t2\\t3'");
  EXPECT_PARSE_ERROR(parse_status(ok + "Gid:\t1 2 3 4 5\n"), "line 8: Gid: bad value");
  EXPECT_PARSE_ERROR(parse_status(ok + "Uid:\t1 2 x 4\n"), "line 8: Uid: bad value");
  EXPECT_PARSE_ERROR(parse_status(ok + "SigBlk:\tzz\n"), "line 8: SigBlk: bad value 'zz'");
  EXPECT_PARSE_ERROR(parse_status(ok + "Umask:\t0089\n"), "line 8: Umask: bad value '0089'");
  EXPECT_PARSE_ERROR(parse_status(ok + "NStgid:\t\n"), "line 8: NStgid: bad value ''");
  EXPECT_PARSE_ERROR(parse_status(ok + "Groups:\t1 -2\n"), "line 8: Groups: bad value");
  EXPECT_PARSE_ERROR(parse_status(ok + "CapEff:\t1ffffffffffffffff\n"), "CapEff: bad value");
  EXPECT_PARSE_ERROR(parse_status(ok + "State:\t\n"), "State: bad value ''");
  EXPECT_PARSE_ERROR(parse_status(ok + ":x\n"), "line 8: expected 'Key: value'");
  hammer(testdata("status_threads.txt"), [](std::string_view s) { parse_status(s); });
  hammer(testdata("status_pidns.txt"), [](std::string_view s) { parse_status(s); });
}

// ---- smaps, maps: captured from the process above, which also had a heap,
// a MAP_SHARED|MAP_ANONYMOUS region, a MAP_SHARED mapping of a file unlinked
// afterwards ("/tmp/proccap/deleted file") and a private mapping of
// "/tmp/proccap/with space (x).bin". maps.txt is its maps right after.

const Vma* find_path(const std::vector<Vma>& vmas, std::string_view path) {
  for (const Vma& v : vmas)
    if (v.path == path) return &v;
  return nullptr;
}

TEST(ProcSmaps, Captured) {
  std::vector<Vma> vmas = parse_smaps(testdata("smaps.txt"));
  ASSERT_EQ(vmas.size(), 48u);

  const Vma& exe = vmas[0];
  EXPECT_EQ(exe.start, 0x561b8a815000u);
  EXPECT_EQ(exe.end, 0x561b8a817000u);
  EXPECT_TRUE(exe.r);
  EXPECT_FALSE(exe.w || exe.x || exe.shared || exe.deleted);
  EXPECT_EQ(exe.dev_major, 0xfeu);
  EXPECT_EQ(exe.dev_minor, 0u);
  EXPECT_EQ(exe.inode, 10952930u);
  EXPECT_EQ(exe.path, "/tmp/proccap/cap");
  EXPECT_EQ(exe.rss_kb, 8u);
  EXPECT_EQ(exe.vm_flags, (std::vector<std::string>{"rd", "mr", "mw", "me"}));

  const Vma* heap = find_path(vmas, "[heap]");
  ASSERT_TRUE(heap);
  EXPECT_EQ(heap->start, 0x561b92f4d000u);
  EXPECT_EQ(heap->end, 0x561b92f90000u);
  EXPECT_TRUE(heap->r && heap->w && !heap->x && !heap->shared);
  EXPECT_EQ(heap->inode, 0u);
  EXPECT_EQ(heap->rss_kb, 76u);
  EXPECT_EQ(heap->anonymous_kb, 76u);
  EXPECT_EQ(heap->swap_kb, 0u);
  EXPECT_TRUE(heap->has_flag("ac"));
  EXPECT_FALSE(heap->has_flag("gd"));

  const Vma* stack = find_path(vmas, "[stack]");
  ASSERT_TRUE(stack);
  EXPECT_EQ(stack->rss_kb, 12u);
  EXPECT_TRUE(stack->has_flag("gd"));

  const Vma* libc_text = nullptr;
  for (const Vma& v : vmas)
    if (v.path == "/usr/lib/x86_64-linux-gnu/libc.so.6" && v.x) libc_text = &v;
  ASSERT_TRUE(libc_text);
  EXPECT_EQ(libc_text->pgoff, 0x26000u);
  EXPECT_EQ(libc_text->inode, 332835u);

  const Vma* spaced = find_path(vmas, "/tmp/proccap/with space (x).bin");
  ASSERT_TRUE(spaced);
  EXPECT_FALSE(spaced->deleted);
  EXPECT_FALSE(spaced->shared);
  EXPECT_EQ(spaced->end - spaced->start, 8192u);
  EXPECT_EQ(spaced->anonymous_kb, 4u);  // one page written (COW)
  EXPECT_EQ(spaced->inode, 10952926u);

  const Vma* deleted = find_path(vmas, "/tmp/proccap/deleted file");
  ASSERT_TRUE(deleted);
  EXPECT_TRUE(deleted->deleted);
  EXPECT_TRUE(deleted->shared && deleted->r && !deleted->w);
  EXPECT_TRUE(deleted->has_flag("sh"));

  // A MAP_SHARED|MAP_ANONYMOUS region is shmem shown as "/dev/zero (deleted)".
  const Vma* shanon = find_path(vmas, "/dev/zero");
  ASSERT_TRUE(shanon);
  EXPECT_TRUE(shanon->deleted && shanon->shared);
  EXPECT_EQ(shanon->dev_major, 0u);
  EXPECT_EQ(shanon->dev_minor, 1u);
  EXPECT_EQ(shanon->inode, 1025u);
  EXPECT_EQ(shanon->rss_kb, 4u);

  for (const char* special : {"[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"})
    EXPECT_TRUE(find_path(vmas, special)) << special;
  EXPECT_EQ(find_path(vmas, "[vsyscall]")->start, 0xffffffffff600000u);
  EXPECT_TRUE(find_path(vmas, "[vdso]")->x);

  // Anonymous private mappings: the header ends in a blank, the path is empty.
  int anon = 0;
  for (const Vma& v : vmas) {
    if (v.path.empty()) {
      anon++;
      EXPECT_EQ(v.inode, 0u);
    }
    EXPECT_FALSE(v.vm_flags.empty());
    EXPECT_LT(v.start, v.end);
  }
  EXPECT_EQ(anon, 9);
}

TEST(ProcSmaps, MapsAgreesWithSmaps) {
  std::vector<Vma> s = parse_smaps(testdata("smaps.txt"));
  std::vector<Vma> m = parse_maps(testdata("maps.txt"));
  ASSERT_EQ(s.size(), m.size());
  for (size_t i = 0; i < s.size(); i++) {
    EXPECT_EQ(s[i].start, m[i].start) << i;
    EXPECT_EQ(s[i].end, m[i].end) << i;
    EXPECT_EQ(s[i].path, m[i].path) << i;
    EXPECT_EQ(s[i].deleted, m[i].deleted) << i;
    EXPECT_EQ(s[i].pgoff, m[i].pgoff) << i;
    EXPECT_EQ(s[i].inode, m[i].inode) << i;
    EXPECT_EQ(std::tie(s[i].r, s[i].w, s[i].x, s[i].shared),
              std::tie(m[i].r, m[i].w, m[i].x, m[i].shared))
        << i;
    EXPECT_TRUE(m[i].vm_flags.empty());
  }
}

TEST(ProcSmaps, NamedAnonAndOddPaths) {
  // PR_SET_VMA_ANON_NAME is not in this machine's kernel config: written by hand.
  std::string text =
      "7f0000000000-7f0000003000 rw-p 00000000 00:00 0                          [anon:my region]\n"
      "Rss:                  12 kB\n"
      "Swap:                  4 kB\n"
      "Anonymous:            12 kB\n"
      "VmFlags: rd wr mr mw me ac\n"
      "7f0000003000-7f0000004000 r--s 00001000 103:0a 42   /a (deleted) b (deleted)\n"
      "VmFlags: rd sh\n"
      "7f0000004000-7f0000005000 ---p 00000000 00:00 0\n"
      "THPeligible:    0\n"
      "ProtectionKey:         0\n"
      "VmFlags:\n";
  std::vector<Vma> vmas = parse_smaps(text);
  ASSERT_EQ(vmas.size(), 3u);
  EXPECT_EQ(vmas[0].path, "[anon:my region]");
  EXPECT_EQ(vmas[0].swap_kb, 4u);
  EXPECT_EQ(vmas[1].path, "/a (deleted) b");
  EXPECT_TRUE(vmas[1].deleted);
  EXPECT_EQ(vmas[1].pgoff, 0x1000u);
  EXPECT_EQ(vmas[1].dev_major, 0x103u);
  EXPECT_EQ(vmas[1].dev_minor, 0xau);
  EXPECT_EQ(vmas[2].path, "");
  EXPECT_FALSE(vmas[2].r || vmas[2].w || vmas[2].x);
  EXPECT_TRUE(vmas[2].vm_flags.empty());
  EXPECT_TRUE(parse_smaps("").empty());  // a kernel thread has no mappings
  EXPECT_TRUE(parse_maps("").empty());
}

TEST(ProcSmaps, Malformed) {
  std::string good = testdata("smaps.txt");
  // Line 12 of the first mapping's fields replaced by garbage.
  size_t at = 0;
  for (int i = 0; i < 11; i++) at = good.find('\n', at) + 1;
  std::string bad = good.substr(0, at) + "xyz\n" + good.substr(good.find('\n', at) + 1);
  EXPECT_PARSE_ERROR(parse_smaps(bad), "smaps: line 12: bad address range 'xyz'");

  const std::string hdr = "7f00-7f01 rw-p 00000000 00:00 0 \n";
  EXPECT_PARSE_ERROR(parse_smaps("Rss: 4 kB\n"), "smaps: line 1: field before the first mapping");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + "Rss: 4 kB\n"),
                     "line 2: mapping 7f00-7f01 has no VmFlags line");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + hdr + "VmFlags: rd\n"),
                     "line 2: mapping 7f00-7f01 has no VmFlags");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + "VmFlags: rd\nVmFlags: wr\n"), "line 3: second VmFlags");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + "Rss: abc kB\nVmFlags:\n"),
                     "line 2: Rss: bad value 'abc kB'");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + "Swap: 4 MB\nVmFlags:\n"), "line 2: Swap: bad value '4 MB'");
  EXPECT_PARSE_ERROR(parse_smaps(hdr + "Anonymous:\nVmFlags:\n"),
                     "line 2: Anonymous: bad value ''");
  EXPECT_PARSE_ERROR(parse_maps("7f01-7f00 rw-p 0 00:00 0\n"),
                     "maps: line 1: bad address range '7f01-7f00'");
  EXPECT_PARSE_ERROR(parse_maps("7f00 rw-p 0 00:00 0\n"), "bad address range '7f00'");
  EXPECT_PARSE_ERROR(parse_maps("-7f00 rw-p 0 00:00 0\n"), "bad address range '-7f00'");
  EXPECT_PARSE_ERROR(parse_maps("1ffffffffffffffff-2 rw-p 0 00:00 0\n"), "bad address range");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rwzp 0 00:00 0\n"), "bad permissions 'rwzp'");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rw-p\n"), "bad offset ''");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rw-p 0g 00:00 0\n"), "bad offset '0g'");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rw-p 0 0000 0\n"), "bad device '0000'");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rw-p 0 00:00\n"), "bad inode ''");
  EXPECT_PARSE_ERROR(parse_maps("7f00-7f01 rw-p 0 00:00 0\n\x01\x02\xff"),
                     "maps: line 2: bad address range '\\x01\\x02\\xff'");
  // smaps text is not maps text.
  EXPECT_PARSE_ERROR(parse_maps(good), "maps: line 2: bad address range 'Size:'");
  // Long garbage is quoted short.
  std::string msg = error_of([&] { parse_maps(std::string(100000, 'z')); });
  EXPECT_LT(msg.size(), 200u) << msg;

  int errors = hammer(good, [](std::string_view s) { parse_smaps(s); });
  EXPECT_GT(errors, 0);
  hammer(testdata("maps.txt"), [](std::string_view s) { parse_maps(s); });
}

TEST(ProcSmaps, ThousandsOfMappingsParseFast) {
  // 20000 mappings of 24 lines each, like a big JVM: ~15 MB of text.
  std::string block = testdata("smaps.txt");
  block = block.substr(0, block.find('\n', block.find("VmFlags:")) + 1);
  block = block.substr(block.find('\n') + 1);  // the field lines of one mapping
  std::string text;
  const int kVmas = 20000;
  for (int i = 0; i < kVmas; i++) {
    uint64_t start = 0x7f0000000000ull + uint64_t(i) * 0x2000;
    text += strfmt("%llx-%llx rw-p 00000000 fe:00 %d                   /usr/lib/lib %d.so\n",
                   (unsigned long long)start, (unsigned long long)start + 0x1000, i, i);
    text += block;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<Vma> vmas = parse_smaps(text);
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(vmas.size(), size_t(kVmas));
  EXPECT_EQ(vmas.back().path, strfmt("/usr/lib/lib %d.so", kVmas - 1));
  EXPECT_EQ(vmas.back().rss_kb, 8u);
  RecordProperty("parse_ms", std::to_string(ms));
  printf("parsed %zu bytes, %d mappings in %.1f ms\n", text.size(), kVmas, ms);
  EXPECT_LT(ms, 2000.0);  // ~50 ms when optimized; generous for sanitizers
}

// ---- fdinfo: captured for a regular file (lseek to 17), an O_APPEND|
// O_NONBLOCK file, a pipe, an eventfd(42, EFD_SEMAPHORE), an epoll watching
// the eventfd and the pipe, an inotify with two watches, a signalfd and an
// armed timerfd.

using Extra = std::vector<std::pair<std::string, std::string>>;

TEST(ProcFdinfo, RegularFiles) {
  FdInfo reg = parse_fdinfo(testdata("fdinfo_reg.txt"));
  EXPECT_EQ(reg.pos, 17u);
  EXPECT_EQ(reg.flags, 0100000u);  // O_LARGEFILE as the kernel sees it
  EXPECT_EQ(reg.mnt_id, 26);
  EXPECT_EQ(reg.ino, 861u);
  EXPECT_TRUE(reg.extra.empty());

  FdInfo app = parse_fdinfo(testdata("fdinfo_append.txt"));
  EXPECT_EQ(app.pos, 5u);
  EXPECT_EQ(app.flags, 0100000u | O_APPEND | O_NONBLOCK | O_WRONLY);
  EXPECT_EQ(app.ino, 10952927u);
}

TEST(ProcFdinfo, PipeEventfdSignalfd) {
  FdInfo pipe = parse_fdinfo(testdata("fdinfo_pipe.txt"));
  EXPECT_EQ(pipe.flags, unsigned(O_NONBLOCK));
  EXPECT_EQ(pipe.mnt_id, 16);
  EXPECT_EQ(pipe.ino, 9436u);

  FdInfo ev = parse_fdinfo(testdata("fdinfo_eventfd.txt"));
  EXPECT_EQ(ev.flags, unsigned(O_RDWR | O_NONBLOCK));
  EXPECT_EQ(ev.extra,
            (Extra{{"eventfd-count", "2a"}, {"eventfd-id", "1"}, {"eventfd-semaphore", "1"}}));

  FdInfo sig = parse_fdinfo(testdata("fdinfo_signalfd.txt"));
  EXPECT_EQ(sig.extra, (Extra{{"sigmask", "0000000000004200"}}));
}

TEST(ProcFdinfo, EpollInotifyTimerfd) {
  FdInfo ep = parse_fdinfo(testdata("fdinfo_epoll.txt"));
  EXPECT_EQ(ep.flags, unsigned(O_RDWR | O_CLOEXEC));
  EXPECT_EQ(ep.extra,
            (Extra{{"tfd", "7 events: 80000019 data:                7  pos:0 ino:24dc sdev:f"},
                   {"tfd", "9 events:       1d data:       1122334455  pos:0 ino:40e sdev:10"}}));

  FdInfo in = parse_fdinfo(testdata("fdinfo_inotify.txt"));
  ASSERT_EQ(in.extra.size(), 2u);
  EXPECT_EQ(in.extra[0].first, "inotify wd");
  EXPECT_EQ(in.extra[0].second,
            "2 ino:35d sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
            "f_handle:5d03000000000000");
  EXPECT_EQ(in.extra[1].second.substr(0, 12), "1 ino:3c51a ");

  FdInfo tfd = parse_fdinfo(testdata("fdinfo_timerfd.txt"));
  EXPECT_EQ(tfd.flags, unsigned(O_RDWR));
  EXPECT_EQ(tfd.extra, (Extra{{"clockid", "1"},
                              {"ticks", "0"},
                              {"settime flags", "00"},
                              {"it_value", "(99, 801945130)"},
                              {"it_interval", "(1, 0)"}}));
}

TEST(ProcFdinfo, NegativePosKeepsBits) {
  FdInfo fi = parse_fdinfo("pos:\t-2\nflags:\t02\n");
  EXPECT_EQ(fi.pos, ~uint64_t{1});
  EXPECT_EQ(fi.mnt_id, -1);  // absent
}

TEST(ProcFdinfo, FreeFormLinesKept) {
  // io_uring prints lines that are not "key: value".
  proc::FdInfo fi = parse_fdinfo("pos:\t0\nflags:\t02\n  op=6, task_works=0\n: x\n");
  ASSERT_EQ(fi.extra.size(), 2u);
  EXPECT_EQ(fi.extra[0].first, "");
  EXPECT_EQ(fi.extra[0].second, "op=6, task_works=0");
  EXPECT_EQ(fi.extra[1].second, ": x");
}

TEST(ProcFdinfo, Malformed) {
  EXPECT_PARSE_ERROR(parse_fdinfo(""), "fdinfo: no 'pos:' line");
  EXPECT_PARSE_ERROR(parse_fdinfo("pos:\t0\n"), "fdinfo: no 'flags:' line");
  // Without pos/flags a free-form line does not make it valid.
  EXPECT_PARSE_ERROR(parse_fdinfo("garbage\n"), "fdinfo: no 'pos:' line");
  EXPECT_PARSE_ERROR(parse_fdinfo("pos:\tabc\nflags:\t0\n"), "line 1: pos: bad value 'abc'");
  EXPECT_PARSE_ERROR(parse_fdinfo("pos:\t0\nflags:\t0999\n"), "line 2: flags: bad value '0999'");
  EXPECT_PARSE_ERROR(parse_fdinfo("pos:\t0\nflags:\t0\nmnt_id:\t\n"),
                     "line 3: mnt_id: bad value ''");
  EXPECT_PARSE_ERROR(parse_fdinfo("pos:\t0\nflags:\t0\nino:\t-1\n"), "line 3: ino: bad value '-1'");
  for (const char* f :
       {"fdinfo_reg.txt", "fdinfo_epoll.txt", "fdinfo_inotify.txt", "fdinfo_timerfd.txt"})
    hammer(testdata(f), [](std::string_view s) { parse_fdinfo(s); });
}

// ---- limits: this machine's defaults (a soft stack and core limit).

TEST(ProcLimits, Captured) {
  std::vector<Limit> l = parse_limits(testdata("limits.txt"));
  ASSERT_EQ(l.size(), size_t(RLIMIT_NLIMITS));
  for (int i = 0; i < RLIMIT_NLIMITS; i++) EXPECT_EQ(l[i].resource, i);
  const uint64_t inf = ~0ULL;
  EXPECT_EQ(l[RLIMIT_CPU].cur, inf);
  EXPECT_EQ(l[RLIMIT_STACK].cur, 8388608u);
  EXPECT_EQ(l[RLIMIT_STACK].max, inf);
  EXPECT_EQ(l[RLIMIT_CORE].cur, 0u);
  EXPECT_EQ(l[RLIMIT_CORE].max, inf);
  EXPECT_EQ(l[RLIMIT_NPROC].cur, 96364u);
  EXPECT_EQ(l[RLIMIT_NOFILE].cur, 20000u);
  EXPECT_EQ(l[RLIMIT_NOFILE].max, 20000u);
  EXPECT_EQ(l[RLIMIT_MEMLOCK].max, 8388608u);
  EXPECT_EQ(l[RLIMIT_SIGPENDING].max, 96364u);
  EXPECT_EQ(l[RLIMIT_MSGQUEUE].cur, 819200u);
  EXPECT_EQ(l[RLIMIT_NICE].cur, 0u);
  EXPECT_EQ(l[RLIMIT_RTPRIO].max, 0u);
  EXPECT_EQ(l[RLIMIT_RTTIME].cur, inf);
}

TEST(ProcLimits, Malformed) {
  std::string good = testdata("limits.txt");
  auto without = [&](const std::string& row) {
    size_t at = good.find(row);
    return good.substr(0, at) + good.substr(good.find('\n', at) + 1);
  };
  auto replaced = [&](const std::string& row, const std::string& line) {
    size_t at = good.find(row);
    return good.substr(0, at) + line + good.substr(good.find('\n', at));
  };
  EXPECT_PARSE_ERROR(parse_limits(""), "limits: no 'Max cpu time' line");
  EXPECT_PARSE_ERROR(parse_limits(without("Max open files")), "limits: no 'Max open files' line");
  EXPECT_PARSE_ERROR(parse_limits(good + "Max open files 1 1 files\n"),
                     "line 18: second 'Max open files' line");
  EXPECT_PARSE_ERROR(parse_limits(good + "Max foo 1 1\n"), "line 18: unknown limit 'Max foo 1 1'");
  EXPECT_PARSE_ERROR(parse_limits(replaced("Max open files", "Max open files      abc   1  files")),
                     "line 9: Max open files: bad value 'abc'");
  EXPECT_PARSE_ERROR(parse_limits(replaced("Max open files", "Max open files      20000")),
                     "line 9: Max open files: bad value ''");
  EXPECT_PARSE_ERROR(parse_limits(replaced("Max open files", "Max open files  1 2 files extra")),
                     "line 9: trailing text 'extra'");
  EXPECT_PARSE_ERROR(parse_limits(replaced("Max open files", "Max open files  -1 2 files")),
                     "bad value '-1'");
  EXPECT_PARSE_ERROR(parse_limits(replaced("Max open files", "Max open files")), "unknown limit");
  hammer(good, [](std::string_view s) { parse_limits(s); });
}

// ---- mountinfo: captured in a mount namespace (unshare -m) after
// "mount --make-rshared /", a tmpfs with source "my src" on
// "/tmp/proccap/mnt point" and a slave bind mount of it on /tmp/proccap/m2.

TEST(ProcMountinfo, Captured) {
  std::vector<Mount> ms = parse_mountinfo(testdata("mountinfo.txt"));
  ASSERT_EQ(ms.size(), 22u);
  const Mount& root = ms[0];
  EXPECT_EQ(root.mnt_id, 42);
  EXPECT_EQ(root.parent_id, 41);
  EXPECT_EQ(root.dev_major, 254u);
  EXPECT_EQ(root.dev_minor, 0u);
  EXPECT_EQ(root.root, "/");
  EXPECT_EQ(root.mount_point, "/");
  EXPECT_EQ(root.mount_options, "rw,relatime");
  EXPECT_EQ(root.optional_fields, std::vector<std::string>{"shared:1"});
  EXPECT_EQ(root.fstype, "ext4");
  EXPECT_EQ(root.source, "/dev/vda");
  EXPECT_EQ(root.super_options, "rw,discard,resv_strict,resuid=65534,resgid=65534");

  const Mount& spaced = ms[20];
  EXPECT_EQ(spaced.mnt_id, 62);
  EXPECT_EQ(spaced.dev_minor, 38u);
  EXPECT_EQ(spaced.mount_point, "/tmp/proccap/mnt point");
  EXPECT_EQ(spaced.source, "my src");
  EXPECT_EQ(spaced.fstype, "tmpfs");
  EXPECT_EQ(spaced.super_options, "rw,size=1024k");
  EXPECT_EQ(spaced.optional_fields, std::vector<std::string>{"shared:21"});

  const Mount& slave = ms[21];
  EXPECT_EQ(slave.mount_point, "/tmp/proccap/m2");
  EXPECT_EQ(slave.optional_fields, std::vector<std::string>{"master:21"});
  EXPECT_EQ(slave.dev_minor, 38u);
}

TEST(ProcMountinfo, OddLines) {
  std::vector<Mount> ms = parse_mountinfo(
      "1 0 0:1 /sub\\134dir /a\\011b ro - tmpfs  rw\n"
      "2 1 8:1 / /x rw shared:1 master:2 propagate_from:3 unbindable - ext4 /dev/sda1 rw,a b\n");
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_EQ(ms[0].root, "/sub\\dir");
  EXPECT_EQ(ms[0].mount_point, "/a\tb");
  EXPECT_TRUE(ms[0].optional_fields.empty());
  EXPECT_EQ(ms[0].source, "");
  EXPECT_EQ(ms[0].super_options, "rw");
  EXPECT_EQ(ms[1].optional_fields,
            (std::vector<std::string>{"shared:1", "master:2", "propagate_from:3", "unbindable"}));
  EXPECT_EQ(ms[1].super_options, "rw,a b");
  // A backslash not followed by three octal digits stays.
  EXPECT_EQ(parse_mountinfo("1 0 0:1 / /a\\08 rw - t s rw\n")[0].mount_point, "/a\\08");
  EXPECT_EQ(parse_mountinfo("1 0 0:1 / /a\\1 rw - t s rw")[0].mount_point, "/a\\1");
}

TEST(ProcMountinfo, Malformed) {
  EXPECT_PARSE_ERROR(parse_mountinfo(""), "mountinfo: no mounts");
  EXPECT_PARSE_ERROR(parse_mountinfo("garbage\n"), "mountinfo: line 1: expected 'id parent");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / rw shared:1 tmpfs tmpfs rw\n"),
                     "line 1: expected");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / rw - tmpfs tmpfs\n"), "line 1: expected");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / - tmpfs tmpfs rw\n"), "line 1: expected");
  EXPECT_PARSE_ERROR(parse_mountinfo("x 0 0:1 / / rw - tmpfs tmpfs rw\n"),
                     "line 1: bad mount id 'x'");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 y 0:1 / / rw - tmpfs tmpfs rw\n"),
                     "line 1: bad parent id 'y'");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 01 / / rw - tmpfs tmpfs rw\n"),
                     "line 1: bad device '01'");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / rw - t s rw\n1 0 0:1 / /  rw - t s rw\n"),
                     "line 2: empty field in '1 0 0:1 / /  rw - t s rw'");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / rw -  s rw\n"), "line 1: empty field");
  EXPECT_PARSE_ERROR(parse_mountinfo("1 0 0:1 / / rw - t s \n"), "line 1: empty field");
  hammer(testdata("mountinfo.txt"), [](std::string_view s) { parse_mountinfo(s); });
}

// ---- pid lists, auxv

TEST(ProcPidList, Parse) {
  EXPECT_EQ(parse_pid_list("12 7 4000000 \n"), (std::vector<pid_t>{12, 7, 4000000}));
  EXPECT_TRUE(parse_pid_list("").empty());
  EXPECT_TRUE(parse_pid_list(" \n").empty());
  EXPECT_PARSE_ERROR(parse_pid_list("1 x"), "pid list: bad pid 'x'");
  EXPECT_PARSE_ERROR(parse_pid_list("-5"), "pid list: bad pid '-5'");
  EXPECT_PARSE_ERROR(parse_pid_list("0"), "pid list: bad pid '0'");
  EXPECT_PARSE_ERROR(parse_pid_list("99999999999"), "bad pid");
}

TEST(ProcAuxv, Parse) {
  uint64_t words[4] = {6, 4096, 0, 0};
  std::string bytes(reinterpret_cast<const char*>(words), sizeof words);
  EXPECT_EQ(parse_auxv(bytes), (std::vector<uint64_t>{6, 4096, 0, 0}));
  EXPECT_TRUE(parse_auxv("").empty());
  EXPECT_PARSE_ERROR(parse_auxv(bytes.substr(0, 13)),
                     "auxv: 13 bytes is not a whole number of words");
}

// ---- live /proc of this test process

// Threads that wait until released, so the test can look at them.
class Parked {
 public:
  explicit Parked(int n, std::function<void()> work = {}) {
    for (int i = 0; i < n; i++) {
      threads_.emplace_back([this, work] {
        if (work) work();
        std::unique_lock<std::mutex> lk(mu_);
        tids_.push_back(gettid());
        cv_.notify_all();
        cv_.wait(lk, [this] { return done_; });
      });
    }
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return tids_.size() == size_t(n); });
  }
  ~Parked() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  std::vector<pid_t> tids() {
    std::lock_guard<std::mutex> lk(mu_);
    return tids_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::vector<pid_t> tids_;
  std::vector<std::thread> threads_;
};

// A forked child that sleeps until killed; killed and reaped on destruction.
struct Child {
  pid_t pid = fork();
  Child() {
    if (pid == 0) {
      pause();
      _exit(0);
    }
  }
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, __WALL);
    }
  }
};

TEST(ProcLive, StatAndStatus) {
  Stat st = read_stat(getpid());
  EXPECT_EQ(st.pid, getpid());
  EXPECT_EQ(st.ppid, getppid());
  EXPECT_EQ(st.pgrp, getpgrp());
  EXPECT_EQ(st.session, getsid(0));
  EXPECT_EQ(st.state, 'R');
  std::string comm = read_file("/proc/self/comm");
  EXPECT_EQ(st.comm + "\n", comm);
  EXPECT_GT(st.start_brk, 0u);

  mode_t old = umask(0027);
  Status s = read_status(getpid());
  umask(old);
  EXPECT_EQ(s.name + "\n", comm);
  EXPECT_EQ(s.umask, 0027u);
  EXPECT_EQ(s.pid, getpid());
  EXPECT_EQ(s.tgid, getpid());
  EXPECT_EQ(s.ppid, getppid());
  EXPECT_EQ(s.uid[0], getuid());
  EXPECT_EQ(s.uid[1], geteuid());
  EXPECT_EQ(s.gid[0], getgid());
  ASSERT_FALSE(s.nspid.empty());
  EXPECT_EQ(s.nspid.back(), getpid());
}

TEST(ProcLive, ThreeThreads) {
  Parked parked(2);
  std::vector<pid_t> tids = list_threads(getpid());
  ASSERT_EQ(tids.size(), 3u);
  EXPECT_EQ(tids[0], getpid());
  EXPECT_LT(tids[1], tids[2]);
  std::vector<pid_t> others = parked.tids();
  std::sort(others.begin(), others.end());
  EXPECT_EQ(std::vector<pid_t>(tids.begin() + 1, tids.end()), others);
  EXPECT_EQ(read_status(getpid()).threads, 3);
  EXPECT_EQ(read_stat(getpid()).num_threads, 3);
  for (pid_t tid : tids) {
    Stat ts = read_thread_stat(getpid(), tid);
    EXPECT_EQ(ts.pid, tid);
    EXPECT_EQ(ts.num_threads, 3);
  }
}

TEST(ProcLive, FdsAndFdinfo) {
  UniqueFd ev(eventfd(5, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_TRUE(ev.valid());
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  UniqueFd big(fcntl(r.get(), F_DUPFD_CLOEXEC, 900));
  std::vector<int> fds = list_fds(getpid());
  EXPECT_TRUE(std::is_sorted(fds.begin(), fds.end()));
  for (int fd : {ev.get(), r.get(), w.get(), big.get(), 0})
    EXPECT_TRUE(std::binary_search(fds.begin(), fds.end(), fd)) << fd;
  // The directory stream list_fds used is closed and left out.
  for (int fd : fds) EXPECT_NE(fcntl(fd, F_GETFD), -1) << fd;
  EXPECT_EQ(fds.back(), big.get());

  FdInfo fi = read_fdinfo(getpid(), ev.get());
  EXPECT_EQ(fi.flags & O_NONBLOCK, unsigned(O_NONBLOCK));
  EXPECT_EQ(fi.flags & O_CLOEXEC, unsigned(O_CLOEXEC));
  bool found = false;
  for (auto& [k, v] : fi.extra)
    if (k == "eventfd-count") found = v == "5";
  EXPECT_TRUE(found);

  UniqueFd f = open_or_throw("/proc/self/exe", O_RDONLY);
  ASSERT_EQ(lseek(f.get(), 123, SEEK_SET), 123);
  struct stat sb;
  ASSERT_EQ(fstat(f.get(), &sb), 0);
  fi = read_fdinfo(getpid(), f.get());
  EXPECT_EQ(fi.pos, 123u);
  EXPECT_EQ(fi.ino, sb.st_ino);
  EXPECT_GE(fi.mnt_id, 0);
}

TEST(ProcLive, ChildrenOfEveryThread) {
  Child a;
  ASSERT_GT(a.pid, 0);
  // b is forked by another thread: only that thread's children file has it.
  pid_t b = -1;
  std::unique_ptr<Child> b_owner;
  {
    std::mutex mu;
    Parked parked(1, [&] {
      std::lock_guard<std::mutex> lk(mu);
      b_owner = std::make_unique<Child>();
      b = b_owner->pid;
    });
    std::vector<pid_t> kids = list_children(getpid());
    EXPECT_TRUE(std::binary_search(kids.begin(), kids.end(), a.pid));
    EXPECT_TRUE(std::binary_search(kids.begin(), kids.end(), b));
    EXPECT_TRUE(std::is_sorted(kids.begin(), kids.end()));
    std::string leader = read_file(strfmt("/proc/%d/task/%d/children", getpid(), getpid()));
    EXPECT_EQ(leader.find(std::to_string(b)), std::string::npos);
  }
  EXPECT_TRUE(list_children(a.pid).empty());
}

TEST(ProcLive, SmapsSeesOwnMappings) {
  const size_t len = 4 * 4096;
  void* shared = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  void* priv = mmap(nullptr, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(shared, MAP_FAILED);
  ASSERT_NE(priv, MAP_FAILED);
  memset(shared, 1, 2 * 4096);
  auto covering = [](const std::vector<Vma>& vmas, const void* p) -> const Vma* {
    auto a = reinterpret_cast<uint64_t>(p);
    for (const Vma& v : vmas)
      if (v.start <= a && a < v.end) return &v;
    return nullptr;
  };
  std::vector<Vma> vmas = read_smaps(getpid());
  const Vma* s = covering(vmas, shared);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->start, reinterpret_cast<uint64_t>(shared));
  EXPECT_EQ(s->end - s->start, len);
  EXPECT_TRUE(s->shared && s->r && s->w && !s->x);
  EXPECT_EQ(s->rss_kb, 8u);
  EXPECT_TRUE(s->has_flag("sh"));
  const Vma* p = covering(vmas, priv);
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->r && !p->w && !p->shared);
  int local = 0;
  const Vma* stack = covering(vmas, &local);
  ASSERT_TRUE(stack);
  EXPECT_EQ(stack->path, "[stack]");
  const Vma* text = covering(vmas, reinterpret_cast<const void*>(&read_smaps));
  ASSERT_TRUE(text);
  EXPECT_TRUE(text->x);
  EXPECT_EQ(text->path, read_link("/proc/self/exe"));

  std::vector<Vma> maps = read_maps(getpid());
  const Vma* m = covering(maps, shared);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->start, s->start);
  EXPECT_TRUE(m->vm_flags.empty());
  munmap(shared, len);
  munmap(priv, len);
}

TEST(ProcLive, LimitsMatchGetrlimit) {
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_CORE, &saved), 0);
  struct rlimit core = {0, saved.rlim_max};
  ASSERT_EQ(setrlimit(RLIMIT_CORE, &core), 0);
  std::vector<Limit> l = read_limits(getpid());
  ASSERT_EQ(l.size(), size_t(RLIMIT_NLIMITS));
  for (int i = 0; i < RLIMIT_NLIMITS; i++) {
    struct rlimit rl;
    ASSERT_EQ(getrlimit(i, &rl), 0);
    EXPECT_EQ(l[i].cur, uint64_t(rl.rlim_cur)) << i;
    EXPECT_EQ(l[i].max, uint64_t(rl.rlim_max)) << i;
  }
  EXPECT_EQ(l[RLIMIT_CORE].cur, 0u);
  setrlimit(RLIMIT_CORE, &saved);
}

TEST(ProcLive, Auxv) {
  std::vector<uint64_t> aux = read_auxv(getpid());
  ASSERT_GE(aux.size(), 2u);
  ASSERT_EQ(aux.size() % 2, 0u);
  EXPECT_EQ(aux[aux.size() - 2], uint64_t(AT_NULL));
  bool found = false;
  for (size_t i = 0; i + 1 < aux.size(); i += 2)
    if (aux[i] == AT_PAGESZ) found = aux[i + 1] == getauxval(AT_PAGESZ);
  EXPECT_TRUE(found);
}

TEST(ProcLive, Mountinfo) {
  std::vector<Mount> ms = read_mountinfo(getpid());
  bool root = false, proc = false;
  for (const Mount& m : ms) {
    root |= m.mount_point == "/";
    proc |= m.mount_point == "/proc" && m.fstype == "proc";
  }
  EXPECT_TRUE(root);
  EXPECT_TRUE(proc);
}

TEST(ProcLive, GoneProcessSaysWhich) {
  pid_t gone;
  {
    Child c;
    gone = c.pid;
  }
  std::string msg = error_of([&] { read_stat(gone); });
  EXPECT_EQ(msg, strfmt("read /proc/%d/stat: No such file or directory", gone));
  try {
    read_smaps(gone);
  } catch (const Error& e) {
    EXPECT_EQ(e.err(), ENOENT);
  }
  EXPECT_THROW(list_threads(gone), Error);
  EXPECT_THROW(list_fds(gone), Error);
  EXPECT_THROW(list_children(gone), Error);
}

}  // namespace
}  // namespace ckpt::proc
