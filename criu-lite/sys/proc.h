// Parsers for the /proc files the dump reads. Each parse_* takes the file's
// text (so unit tests feed captured text) and throws Error on malformed
// input, naming the file kind and the line. Each read_* reads the file of a
// live task and parses it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::proc {

// /proc/PID/stat (fields after comm are numbered as in proc(5)).
struct Stat {
  pid_t pid = 0;
  std::string comm;  // without the parentheses; may contain spaces and ')'
  char state = '?';
  pid_t ppid = 0;
  pid_t pgrp = 0;
  pid_t session = 0;
  int tty_nr = 0;    // controlling terminal, encoded as in proc(5); 0 for none
  pid_t tpgid = -1;  // foreground process group of that terminal, -1 for none
  unsigned flags = 0;
  long num_threads = 0;
  unsigned long long starttime = 0;
  int exit_signal = 0;
  uint64_t start_code = 0, end_code = 0, start_stack = 0;
  uint64_t start_data = 0, end_data = 0, start_brk = 0;
  uint64_t arg_start = 0, arg_end = 0, env_start = 0, env_end = 0;
  int exit_code = 0;
};
Stat parse_stat(std::string_view text);
Stat read_stat(pid_t pid);
Stat read_thread_stat(pid_t pid, pid_t tid);

// /proc/PID/status, the fields the dump uses.
struct Status {
  std::string name;
  uint32_t umask = 0;
  char state = '?';
  pid_t tgid = 0, pid = 0, ppid = 0;
  uint32_t uid[4] = {};  // real, effective, saved, fs
  uint32_t gid[4] = {};
  std::vector<uint32_t> groups;
  std::vector<pid_t> nstgid, nspid, nspgid, nssid;  // outermost namespace first
  int threads = 0;
  uint64_t sig_pnd = 0, shd_pnd = 0, sig_blk = 0, sig_ign = 0, sig_cgt = 0;
  uint64_t cap_inh = 0, cap_prm = 0, cap_eff = 0, cap_bnd = 0, cap_amb = 0;
  int no_new_privs = 0;
  int seccomp = 0;
  int seccomp_filters = 0;
  uint64_t rss_anon_kb = 0, swap_kb = 0;  // RssAnon, VmSwap
};
Status parse_status(std::string_view text);
Status read_status(pid_t pid);

// One line of /proc/PID/smaps (or maps), with the VmFlags of smaps.
struct Vma {
  uint64_t start = 0, end = 0;
  bool r = false, w = false, x = false, shared = false;
  uint64_t pgoff = 0;
  unsigned dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;                   // "" for anonymous, "[heap]", "[stack]", "[vdso]", "/lib/..."
  bool deleted = false;               // path ended in " (deleted)" (suffix removed from path)
  std::vector<std::string> vm_flags;  // smaps "VmFlags:" two-letter codes
  uint64_t rss_kb = 0, swap_kb = 0, anonymous_kb = 0;
  bool has_flag(std::string_view f) const;
};
std::vector<Vma> parse_smaps(std::string_view text);
std::vector<Vma> parse_maps(std::string_view text);  // no VmFlags
std::vector<Vma> read_smaps(pid_t pid);
// /proc/PID/maps: much cheaper for the kernel than smaps (no page walk).
std::vector<Vma> read_maps(pid_t pid);

// /proc/PID/fdinfo/FD
struct FdInfo {
  uint64_t pos = 0;
  uint32_t flags = 0;  // octal in the file
  int mnt_id = -1;
  uint64_t ino = 0;
  // Every other "key: value" line, in order, for kinds that add their own
  // (eventfd-count, tfd, inotify wd lines, ...). Repeated keys keep all.
  std::vector<std::pair<std::string, std::string>> extra;
};
FdInfo parse_fdinfo(std::string_view text);
FdInfo read_fdinfo(pid_t pid, int fd);

// /proc/PID/limits. Index = RLIMIT_* number; "unlimited" = RLIM_INFINITY.
struct Limit {
  int resource = 0;
  uint64_t cur = 0, max = 0;
};
std::vector<Limit> parse_limits(std::string_view text);
std::vector<Limit> read_limits(pid_t pid);

// /proc/PID/task/TID/children: space separated pids.
std::vector<pid_t> parse_pid_list(std::string_view text);
// Every thread of a process (entries of /proc/PID/task), sorted, leader first.
std::vector<pid_t> list_threads(pid_t pid);
// The direct children of every thread of pid.
std::vector<pid_t> list_children(pid_t pid);
// /proc/PID/fd entries, sorted.
std::vector<int> list_fds(pid_t pid);
// /proc/PID/auxv as 64-bit words (pairs of type, value, ending with AT_NULL).
std::vector<uint64_t> read_auxv(pid_t pid);
// The raw bytes of an auxv file as words; throws if not a whole number of words.
std::vector<uint64_t> parse_auxv(std::string_view bytes);

// /proc/PID/mountinfo line.
// root, mount_point and source have the kernel's octal escapes ("\\040" for
// a space) decoded.
struct Mount {
  int mnt_id = 0, parent_id = 0;
  unsigned dev_major = 0, dev_minor = 0;
  std::string root, mount_point, mount_options;
  std::vector<std::string> optional_fields;
  std::string fstype, source, super_options;
};
std::vector<Mount> parse_mountinfo(std::string_view text);
std::vector<Mount> read_mountinfo(pid_t pid);

}  // namespace ckpt::proc
