// Tests for terminals (objects/tty.h): the tty_nr, device and fdinfo
// parsers, and the state of a live pty pair saved and put on a new pair,
// queued bytes included (ckpt needs CAP_SYS_ADMIN for TIOCSTI: skipped
// without it).
#include "objects/tty.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>
#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

#include "sys/error.h"
#include "sys/fd.h"
#include "sys/proc.h"

namespace ckpt {
namespace {

TEST(TtyNr, Decode) {
  EXPECT_EQ(decode_tty_nr(0), makedev(0, 0));
  EXPECT_EQ(decode_tty_nr(34816), makedev(136, 0));  // /dev/pts/0, from a captured stat
  EXPECT_EQ(decode_tty_nr(1025), makedev(4, 1));     // /dev/tty1
  // pts 300: minor bits 7..0 in bits 7..0, bits 19..8 in bits 31..20
  EXPECT_EQ(decode_tty_nr(0x2c | (136 << 8) | (0x1 << 20)), makedev(136, 300));
}

TEST(TtyName, Devices) {
  EXPECT_EQ(tty_name(makedev(136, 0)), "/dev/pts/0");
  EXPECT_EQ(tty_name(makedev(136, 300)), "/dev/pts/300");
  EXPECT_EQ(tty_name(makedev(5, 0)), "/dev/tty");
  EXPECT_EQ(tty_name(makedev(5, 1)), "/dev/console");
  EXPECT_EQ(tty_name(makedev(5, 2)), "/dev/ptmx");
  EXPECT_EQ(tty_name(makedev(4, 1)), "/dev/tty1");
  EXPECT_EQ(tty_name(makedev(4, 64)), "/dev/ttyS0");
  EXPECT_EQ(tty_name(makedev(188, 2)), "tty 188:2");
}

TEST(TtyDevice, Kinds) {
  EXPECT_EQ(pts_index(makedev(136, 7)), 7);
  EXPECT_EQ(pts_index(makedev(136, 300)), 300);
  EXPECT_EQ(pts_index(makedev(5, 2)), -1);
  EXPECT_EQ(pts_index(makedev(4, 1)), -1);
  EXPECT_TRUE(is_tty_device(makedev(136, 0)));
  EXPECT_TRUE(is_tty_device(makedev(5, 2)));
  EXPECT_TRUE(is_tty_device(makedev(4, 64)));
  EXPECT_FALSE(is_tty_device(makedev(1, 3)));  // /dev/null
  EXPECT_FALSE(is_tty_device(makedev(10, 200)));
}

// fdinfo of a master and of a slave, captured from python's os.openpty().
TEST(TtyFdinfo, TtyIndex) {
  EXPECT_EQ(parse_tty_index(proc::parse_fdinfo("pos:\t0\nflags:\t02100002\nmnt_id:\t23\nino:\t90\n"
                                               "tty-index:\t0\n")),
            0);
  EXPECT_EQ(parse_tty_index(proc::parse_fdinfo("pos:\t0\nflags:\t02100002\nmnt_id:\t23\n"
                                               "ino:\t90\ntty-index:\t4095\n")),
            4095);
  EXPECT_EQ(parse_tty_index(proc::parse_fdinfo("pos:\t0\nflags:\t02000002\nmnt_id:\t28\n"
                                               "ino:\t3\n")),
            -1);
  EXPECT_THROW(parse_tty_index(proc::parse_fdinfo("pos:\t0\nflags:\t02\ntty-index:\tx\n")), Error);
  EXPECT_THROW(parse_tty_index(proc::parse_fdinfo("pos:\t0\nflags:\t02\ntty-index:\t-1\n")), Error);
}

// A pty pair made here.
struct Pty {
  UniqueFd master, slave;
  uint32_t index = 0;
  Pty() {
    master.reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master || unlockpt(master.get()) != 0) return;
    int n = 0;
    ioctl(master.get(), TIOCGPTN, &n);
    index = static_cast<uint32_t>(n);
    slave.reset(open(ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
  }
};

std::string read_some(int fd) {
  char buf[256];
  ssize_t n = read(fd, buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

bool nothing_to_read(int fd) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  char c;
  ssize_t n = read(fd, &c, 1);
  int err = errno;
  fcntl(fd, F_SETFL, fl);
  return n < 0 && err == EAGAIN;
}

bool can_push_bytes() {
  Pty p;
  char c = 'x';
  return p.slave && ioctl(p.slave.get(), TIOCSTI, &c) == 0;
}

TEST(PtyPair, StateAndQueuesSavedAndRestored) {
  if (!can_push_bytes()) GTEST_SKIP() << "TIOCSTI not allowed (needs CAP_SYS_ADMIN)";
  Pty a;
  ASSERT_TRUE(a.slave.valid());
  termios t{};
  ASSERT_EQ(tcgetattr(a.master.get(), &t), 0);
  t.c_lflag &= ~static_cast<tcflag_t>(ECHO);  // canonical, no echo; ONLCR on
  t.c_cc[VERASE] = 0x08;
  ASSERT_EQ(tcsetattr(a.master.get(), TCSANOW, &t), 0);
  winsize ws{24, 80, 640, 480};
  ASSERT_EQ(ioctl(a.master.get(), TIOCSWINSZ, &ws), 0);
  ASSERT_EQ(write(a.master.get(), "one\ntwo\nthr", 11), 11);  // for the slave: a line unfinished
  ASSERT_EQ(write(a.slave.get(), "out\n", 4), 4);             // for the master: "out\r\n"

  img::PtyPair p = save_pty_pair(a.index, a.master.get(), a.slave.get(), a.slave.get());
  EXPECT_EQ(p.index(), a.index);
  EXPECT_EQ(p.slave_input(), "one\ntwo\nthr");
  EXPECT_EQ(p.master_input(), "out\r\n");
  EXPECT_EQ(p.winsize().rows(), 24u);
  EXPECT_EQ(p.winsize().xpixel(), 640u);
  EXPECT_FALSE(p.locked());
  EXPECT_FALSE(p.packet());

  // The live pair has them back, lines as they were, termios unchanged.
  termios back{};
  ASSERT_EQ(tcgetattr(a.master.get(), &back), 0);
  EXPECT_EQ(back.c_lflag, t.c_lflag);
  EXPECT_EQ(back.c_iflag, t.c_iflag);
  EXPECT_EQ(back.c_cc[VERASE], 0x08);
  EXPECT_EQ(read_some(a.slave.get()), "one\n");
  EXPECT_EQ(read_some(a.slave.get()), "two\n");
  EXPECT_TRUE(nothing_to_read(a.slave.get()));
  EXPECT_EQ(read_some(a.master.get()), "out\r\n");

  // And so does a new pair.
  Pty b;
  ASSERT_TRUE(b.slave.valid());
  restore_pty_pair(b.master.get(), b.slave.get(), p);
  termios bt{};
  ASSERT_EQ(tcgetattr(b.master.get(), &bt), 0);
  EXPECT_EQ(bt.c_lflag, t.c_lflag);
  EXPECT_EQ(bt.c_oflag, t.c_oflag);
  EXPECT_EQ(bt.c_cc[VERASE], 0x08);
  winsize bws{};
  ASSERT_EQ(ioctl(b.master.get(), TIOCGWINSZ, &bws), 0);
  EXPECT_EQ(bws.ws_col, 80);
  EXPECT_EQ(bws.ws_ypixel, 480);
  EXPECT_EQ(read_some(b.slave.get()), "one\n");
  EXPECT_EQ(read_some(b.slave.get()), "two\n");
  EXPECT_TRUE(nothing_to_read(b.slave.get()));
  ASSERT_EQ(write(b.master.get(), "ee\n", 3), 3);
  EXPECT_EQ(read_some(b.slave.get()), "three\n");
  EXPECT_EQ(read_some(b.master.get()), "out\r\n");
}

TEST(PtyPair, PacketModeAndLock) {
  if (!can_push_bytes()) GTEST_SKIP() << "TIOCSTI not allowed (needs CAP_SYS_ADMIN)";
  Pty a;
  ASSERT_TRUE(a.slave.valid());
  int one = 1;
  ASSERT_EQ(ioctl(a.master.get(), TIOCPKT, &one), 0);
  ASSERT_EQ(ioctl(a.master.get(), TIOCSPTLCK, &one), 0);
  ASSERT_EQ(write(a.slave.get(), "abc", 3), 3);
  img::PtyPair p = save_pty_pair(a.index, a.master.get(), a.slave.get(), a.slave.get());
  EXPECT_TRUE(p.packet());
  EXPECT_TRUE(p.locked());
  EXPECT_EQ(p.master_input(), "abc");  // without packet mode's status byte
  EXPECT_EQ(read_some(a.master.get()), std::string("\0abc", 4));

  Pty b;
  ASSERT_TRUE(b.slave.valid());
  restore_pty_pair(b.master.get(), b.slave.get(), p);
  int pkt = 0;
  ASSERT_EQ(ioctl(b.master.get(), TIOCGPKT, &pkt), 0);
  EXPECT_EQ(pkt, 1);
  EXPECT_EQ(read_some(b.master.get()), std::string("\0abc", 4));
}

TEST(PtyPair, BadTermiosInImage) {
  Pty b;
  ASSERT_TRUE(b.slave.valid());
  img::PtyPair p;
  p.mutable_termios()->set_cc("short");
  EXPECT_THROW(restore_pty_pair(b.master.get(), b.slave.get(), p), Error);
}

}  // namespace
}  // namespace ckpt
