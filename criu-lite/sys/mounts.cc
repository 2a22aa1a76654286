#include "sys/mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstring>

#include "sys/error.h"

namespace ckpt::sysmnt {

void mount_or_throw(const std::string& source, const std::string& target, const std::string& fstype,
                    unsigned long flags, const std::string& data) {
  if (::mount(source.c_str(), target.c_str(), fstype.empty() ? nullptr : fstype.c_str(), flags,
              data.empty() ? nullptr : data.c_str()) != 0)
    throw_errno("mount " + (fstype.empty() ? std::string() : fstype + " ") + source + " on " +
                target);
}

void detach(const std::string& target) {
  (void)umount2(target.c_str(), MNT_DETACH);
}

UniqueFd open_tree(int dfd, const std::string& path, unsigned flags, const std::string& what) {
  int fd = ::open_tree(dfd, path.c_str(), flags | OPEN_TREE_CLOEXEC);
  if (fd < 0) throw_errno("open_tree " + what);
  return UniqueFd(fd);
}

void move_mount(int from_dfd, const std::string& from_path, int to_dfd, const std::string& to_path,
                unsigned flags, const std::string& what) {
  if (::move_mount(from_dfd, from_path.c_str(), to_dfd, to_path.c_str(), flags) != 0)
    throw_errno("move_mount " + what);
}

void set_attrs(int fd, uint64_t attrs, const std::string& what) {
  constexpr uint64_t kBool = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                             MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NODIRATIME | MOUNT_ATTR_NOSYMFOLLOW;
  mount_attr a{};
  a.attr_set = attrs;
  // Clearing _ATIME replaces the atime mode by the one in attr_set.
  a.attr_clr = (kBool & ~attrs) | MOUNT_ATTR__ATIME;
  if (::mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof(a)) != 0)
    throw_errno("set mount flags of " + what);
}

void set_propagation(int fd, uint64_t propagation, const std::string& what) {
  mount_attr a{};
  a.propagation = propagation;
  if (::mount_setattr(fd, "", AT_EMPTY_PATH, &a, sizeof(a)) != 0)
    throw_errno("set propagation of " + what);
}

int mount_id(int dfd, const std::string& path, int at_flags) {
  struct statx stx {};
  if (::statx(dfd, path.c_str(), at_flags, STATX_MNT_ID, &stx) != 0) throw_errno("statx " + path);
  if (!(stx.stx_mask & STATX_MNT_ID)) throw Error("statx " + path + ": no mount id");
  return static_cast<int>(stx.stx_mnt_id);
}

void send_fd(int sock, int fd, int32_t status) {
  msghdr msg{};
  iovec iov{&status, sizeof(status)};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    msg.msg_control = ctl;
    msg.msg_controllen = sizeof(ctl);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
  }
  if (retry_eintr([&] { return sendmsg(sock, &msg, MSG_NOSIGNAL); }) < 0)
    throw_errno("send a file descriptor");
}

UniqueFd recv_fd(int sock, int32_t* status) {
  msghdr msg{};
  iovec iov{status, sizeof(*status)};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof(ctl);
  ssize_t n = retry_eintr([&] { return recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) throw_errno("receive a file descriptor");
  if (n != sizeof(*status)) throw Error("receive a file descriptor: the helper went away");
  UniqueFd out;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      memcpy(&fd, CMSG_DATA(c), sizeof(int));
      out.reset(fd);
    }
  }
  return out;
}

}  // namespace ckpt::sysmnt
