// Shared by the ipc_*.cc files: each kind of IPC object has its dump and its
// restore in one file, called by ipc_ns.cc inside a thread that has joined
// the namespace.
#pragma once

#include <sys/ipc.h>

#include <cstdint>
#include <string>
#include <vector>

#include "image/image_io.h"
#include "ipc.pb.h"

namespace ckpt::ipc {

inline std::string msgs_image(uint64_t ns_id) {
  return "ipcns-" + std::to_string(ns_id) + "-msgs.img";
}
inline std::string shm_pages_id(uint64_t ns_id, int shmid) {
  return "ipcns-" + std::to_string(ns_id) + "-shm-" + std::to_string(shmid);
}

img::SysvPerm perm_of(const struct ipc_perm& p, int id);
std::string describe(const char* kind, const img::SysvPerm& p);  // "shm id 32768 key 0x1234"

// /proc/sys/NAME of the calling thread's namespace.
std::string read_sysctl(const std::string& name);
void write_sysctl(const std::string& name, const std::string& value);

// Messages of every queue, in order, by queue.
struct QueuedMessages {
  std::vector<img::IpcMessage> all;
};

// --- dump (in the namespace) ---
void dump_shm(img::IpcNs& ns, image::ImageSink& sink, int zstd_level);
void dump_msg(img::IpcNs& ns, QueuedMessages& out);
void dump_sem(img::IpcNs& ns);
void dump_mqueues(img::IpcNs& ns, QueuedMessages& out);

// --- restore (in the namespace, limits already raised) ---
void restore_shm(const img::IpcNs& ns, const image::ImageSource& src);
void restore_msg(const img::IpcNs& ns, const std::vector<img::IpcMessage>& msgs);
void restore_sem(const img::IpcNs& ns);
void restore_mqueues(const img::IpcNs& ns, const std::vector<img::IpcMessage>& msgs);
void finish_shm(const img::IpcNs& ns);

}  // namespace ckpt::ipc
