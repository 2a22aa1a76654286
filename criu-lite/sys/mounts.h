// Thin wrappers over the mount syscalls (the classic mount(2) and the
// fd-based API of Linux 5.2+: open_tree, move_mount, mount_setattr), each
// throwing an Error that names the path and the operation, and fd passing
// over a unix socket (a helper in another mount namespace hands mounts
// back to ckpt as detached trees).
//
// Call order for building a mount from an fd: open_tree(OPEN_TREE_CLONE) or
// fsmount gives a detached mount; move_mount attaches it; an O_PATH fd on
// the attached mount's root then names it even when something is mounted
// over it later, and mount_setattr/move_mount(MOVE_MOUNT_SET_GROUP) work on
// that fd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "sys/fd.h"

namespace ckpt::sysmnt {

// mount(2); data may be empty. Error: "mount TYPE SOURCE on TARGET: ...".
void mount_or_throw(const std::string& source, const std::string& target, const std::string& fstype,
                    unsigned long flags, const std::string& data);
// umount2(target, MNT_DETACH), never throws (for cleanup).
void detach(const std::string& target);

// open_tree(dfd, path, flags | OPEN_TREE_CLOEXEC).
UniqueFd open_tree(int dfd, const std::string& path, unsigned flags, const std::string& what);
void move_mount(int from_dfd, const std::string& from_path, int to_dfd, const std::string& to_path,
                unsigned flags, const std::string& what);
// mount_setattr on the mount whose root fd names (AT_EMPTY_PATH): per-mount
// flags become exactly attrs (MOUNT_ATTR_*), propagation (MS_PRIVATE,
// MS_SHARED, MS_SLAVE, MS_UNBINDABLE, or 0 to leave it) is applied too.
void set_attrs(int fd, uint64_t attrs, const std::string& what);
void set_propagation(int fd, uint64_t propagation, const std::string& what);

// The mount id (as in mountinfo) of the mount path resolves to.
int mount_id(int dfd, const std::string& path, int at_flags = 0);

// One fd (or none, fd < 0) with a status word over a unix socket.
void send_fd(int sock, int fd, int32_t status);
// Returns the fd (invalid if none was sent); throws on a closed socket.
UniqueFd recv_fd(int sock, int32_t* status);

}  // namespace ckpt::sysmnt
