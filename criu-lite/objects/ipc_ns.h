// IPC namespace: SysV shared memory segments (with their pages), message
// queues (with their messages) and semaphore sets (with their values), all
// with the same ids, keys, modes and owners; POSIX message queues with their
// messages and priorities; the namespace's IPC sysctls.
//
// ipcns_fd is open("/proc/PID/ns/ipc"). The work is done in a short-lived
// thread that joins the namespace (sys/ns_thread.h): the caller never moves.
//
// Call order at restore, for a namespace that was just created (empty):
//   check_ipcns_images(ipc, src);        // with the other images, before anything is made
//   restore_ipcns(fd, ipc, src);         // before the tree is forked into the namespace
//   ... the tree is forked and its memory rebuilt (SysV shm attached again) ...
//   finish_ipcns_restore(fd, ipc);       // before the tree runs
#pragma once

#include "image/image_io.h"
#include "ipc.pb.h"

namespace ckpt {

// Saves the namespace. Messages go to ipcns-ID-msgs.img and shared memory
// pages to ipcns-ID-shm-SHMID page images through sink; the rest is returned
// for the caller's namespace image. Reading POSIX queues empties and refills
// them, so the processes using them must be stopped (the tree is frozen).
// zstd_level as for the memory pages (0: raw).
img::IpcNs dump_ipcns(int ipcns_fd, image::ImageSink& sink, int zstd_level = 0);

// Checks that the content images ipc names are present and well formed.
void check_ipcns_images(const img::IpcNs& ipc, const image::ImageSource& src);

// Recreates every object in a fresh namespace (an id already taken is an
// error naming the object). Segments that were IPC_RMID'd while attached
// (SHM_DEST) stay until finish_ipcns_restore; kernel.shm_rmid_forced=1 is
// also set there, since setting it destroys the segments no one attaches yet.
void restore_ipcns(int ipcns_fd, const img::IpcNs& ipc, const image::ImageSource& src);

// After every restored process has attached its SysV segments again.
void finish_ipcns_restore(int ipcns_fd, const img::IpcNs& ipc);

}  // namespace ckpt
