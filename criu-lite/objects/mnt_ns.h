// The mount namespace of a container: which mounts it has, in which order,
// with which options and propagation, and the files of its tmpfs mounts.
//
// Dump (from ckpt's namespace, which is taken as the host's):
//   the container init's mountinfo is compared with ckpt's own. If the
//   container's root is the host's root ("host_root"), only the mounts the
//   container made are saved (those not in the host's table); the rest is
//   the restoring host's and comes with the copy of its namespace. With a
//   rootfs, every mount at and under the root is saved. Each saved mount is
//   one of: a new instance of a filesystem (tmpfs with its files, proc,
//   sysfs, devpts, mqueue, cgroup2), a bind of a host path (any filesystem
//   the host also has mounted: a rootfs directory, an overlay merged dir, a
//   host directory), or a bind of part of an earlier mount of the container.
//   Anything else is refused, naming the mount point and the fs type.
//
// Restore, in the container's root restore process (single-threaded, in a
// fresh mount namespace copied from the host's, already pid 1 of the new pid
// namespace): every mount of the copy is made a slave first, so nothing
// propagates back to the host; the mounts are rebuilt in order (under a
// staging directory when there is a rootfs, then pivot_root), tmpfs filled,
// per-mount flags set, and the propagation (peer groups, slaves) rebuilt
// last with MOVE_MOUNT_SET_GROUP. See docs/limits.md for what is not kept.
#pragma once

#include <sys/types.h>

#include <string>

#include "image/image_io.h"
#include "mnt.pb.h"

namespace ckpt {

constexpr const char* kMntNsImage = "mntns.img";

// pid: a task in the container's mount namespace (its init). tmpfs contents
// go into tmpfs-ID.img and the page store "tmpfs-ID" through sink; the
// returned message says where. zstd_level as for the page data (--compress).
img::MntNs dump_mntns(pid_t pid, image::ImageSink& sink, int zstd_level = 0);
// The same message without reading any tmpfs (a preview of the mounts, to
// be compared with dump_mntns's later).
img::MntNs mntns_layout(pid_t pid);

// mntns.img holding the message (for callers that keep it in its own image).
void save_mntns(image::ImageSink& sink, const img::MntNs& ns);
img::MntNs load_mntns(const image::ImageSource& src);

// Validates every image the mount namespace needs (tmpfs records and page
// data), so a bad image fails the restore's plan step before anything runs.
void check_mntns_images(const img::MntNs& ns, const image::ImageSource& src);

// Called inside the container's root restore process (see above), before it
// forks the rest of the tree. Afterwards root and cwd are the container's
// root, /proc is the container's, and the mount tree matches the dump.
void restore_mntns(const img::MntNs& ns, const image::ImageSource& src);

// mnt_tmpfs.cc: the files of one tmpfs. root is any fd on the root of a
// mount that shows only that tmpfs (a detached clone, so nothing mounted
// inside hides what is underneath).
void dump_tmpfs(int root, uint32_t id, image::ImageSink& sink, int zstd_level,
                const std::string& where);
// Fills the empty tmpfs whose root directory dirfd is open (read-only is
// fine) with the files of tmpfs-ID.
void fill_tmpfs(int dirfd, uint32_t id, const image::ImageSource& src, const std::string& where);
// Validates tmpfs-ID's images.
void check_tmpfs_images(uint32_t id, const image::ImageSource& src);

}  // namespace ckpt
