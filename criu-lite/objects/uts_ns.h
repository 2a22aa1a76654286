// UTS namespace: the host name and the NIS domain name.
#pragma once

#include "ipc.pb.h"

namespace ckpt {

// utsns_fd: open("/proc/PID/ns/uts"). Neither call moves the caller into
// the namespace (the work is done in a short-lived thread, see
// sys/ns_thread.h).
img::UtsNs dump_utsns(int utsns_fd);
void restore_utsns(int utsns_fd, const img::UtsNs& uts);

}  // namespace ckpt
