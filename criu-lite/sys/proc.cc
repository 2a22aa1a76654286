#include "sys/proc.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>

#include "sys/error.h"
#include "sys/fd.h"

// Every parser scans string_views line by line and converts numbers with
// std::from_chars: no regex, no copies of lines, no per-line allocation
// beyond the strings it returns. Errors name the file ("smaps", or
// "parse /proc/PID/smaps" when read from a live task), the line, and the
// offending text, cut short and with non-printable bytes as \xNN.

namespace ckpt::proc {
namespace {

constexpr size_t kQuoteMax = 64;

std::string quote(std::string_view s) {
  std::string out = "'";
  size_t n = std::min(s.size(), kQuoteMax);
  for (size_t i = 0; i < n; i++) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else {
      out += strfmt("\\x%02x", c);
    }
  }
  if (s.size() > kQuoteMax) out += "...";
  out += '\'';
  return out;
}

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// The next blank-separated token of *rest; *rest keeps what follows it.
std::string_view next_token(std::string_view* rest) {
  size_t b = 0;
  while (b < rest->size() && is_blank((*rest)[b])) b++;
  size_t e = b;
  while (e < rest->size() && !is_blank((*rest)[e])) e++;
  std::string_view tok = rest->substr(b, e - b);
  rest->remove_prefix(e);
  return tok;
}

// The whole of s as a number (no sign for unsigned T, no prefix, no blanks).
template <class T>
bool to_num(std::string_view s, T* out, int base = 10) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && end == s.data() + s.size();
}

// Lines of a text, numbered from 1; the last one may lack its '\n'.
class Lines {
 public:
  explicit Lines(std::string_view text) : rest_(text) {}
  bool next(std::string_view* line) {
    if (rest_.empty()) return false;
    size_t nl = rest_.find('\n');
    if (nl == std::string_view::npos) {
      *line = rest_;
      rest_ = {};
    } else {
      *line = rest_.substr(0, nl);
      rest_.remove_prefix(nl + 1);
    }
    no_++;
    return true;
  }
  int no() const { return no_; }

 private:
  std::string_view rest_;
  int no_ = 0;
};

[[noreturn]] void fail(const std::string& what, int line, const std::string& msg) {
  throw Error(strfmt("%s: line %d: %s", what.c_str(), line, msg.c_str()));
}

[[noreturn]] void fail(const std::string& what, const std::string& msg) {
  throw Error(what + ": " + msg);
}

std::string proc_path(pid_t pid, const char* file) {
  return strfmt("/proc/%d/%s", pid, file);
}

// Decodes the "\ooo" escapes that mountinfo uses for ' ', '\t', '\n', '\\'.
std::string unescape_octal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    auto oct = [](char c) { return c >= '0' && c <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && oct(s[i + 1]) && oct(s[i + 2]) && oct(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
      continue;
    }
    out += s[i];
  }
  return out;
}

// Decodes the escapes of status "Name:" ('\n' as "\n", '\\' as "\\").
std::string unescape_name(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == '\\')) {
      out += s[i + 1] == 'n' ? '\n' : '\\';
      i++;
      continue;
    }
    out += s[i];
  }
  return out;
}

// ---- stat -------------------------------------------------------------------

Stat parse_stat_named(std::string_view text, const std::string& what) {
  Stat st;
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    fail(what, "no '(comm)' in " + quote(text));
  std::string_view pid = trim(text.substr(0, open));
  if (!to_num(pid, &st.pid) || st.pid <= 0) fail(what, "bad pid " + quote(pid));
  st.comm.assign(text.substr(open + 1, close - open - 1));

  // f[i] is field i of proc(5); 1 and 2 are pid and comm.
  constexpr int kFields = 52;
  std::string_view f[kFields + 1];
  std::string_view rest = text.substr(close + 1);
  int n = 2;
  while (n < kFields) {
    std::string_view tok = next_token(&rest);
    if (tok.empty()) break;
    f[++n] = tok;
  }
  if (n < kFields) fail(what, strfmt("truncated: %d fields, want %d", n, kFields));

  auto num = [&](int i, const char* name, auto* out) {
    if (!to_num(f[i], out))
      fail(what, strfmt("field %d (%s): bad number %s", i, name, quote(f[i]).c_str()));
  };
  if (f[3].size() != 1) fail(what, "field 3 (state): bad state " + quote(f[3]));
  st.state = f[3][0];
  num(4, "ppid", &st.ppid);
  num(5, "pgrp", &st.pgrp);
  num(6, "session", &st.session);
  num(7, "tty_nr", &st.tty_nr);
  num(8, "tpgid", &st.tpgid);
  num(9, "flags", &st.flags);
  num(20, "num_threads", &st.num_threads);
  num(22, "starttime", &st.starttime);
  num(26, "startcode", &st.start_code);
  num(27, "endcode", &st.end_code);
  num(28, "startstack", &st.start_stack);
  num(38, "exit_signal", &st.exit_signal);
  num(45, "start_data", &st.start_data);
  num(46, "end_data", &st.end_data);
  num(47, "start_brk", &st.start_brk);
  num(48, "arg_start", &st.arg_start);
  num(49, "arg_end", &st.arg_end);
  num(50, "env_start", &st.env_start);
  num(51, "env_end", &st.env_end);
  num(52, "exit_code", &st.exit_code);
  return st;
}

// ---- status -----------------------------------------------------------------

Status parse_status_named(std::string_view text, const std::string& what) {
  Status st;
  enum : unsigned { kName = 1, kState = 2, kTgid = 4, kPid = 8, kPPid = 16, kUid = 32, kGid = 64 };
  unsigned seen = 0;
  Lines lines(text);
  std::string_view line;
  while (lines.next(&line)) {
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      fail(what, lines.no(), "expected 'Key: value', got " + quote(line));
    std::string_view key = line.substr(0, colon);
    std::string_view raw = line.substr(colon + 1);
    std::string_view val = trim(raw);

    auto bad = [&]() { fail(what, lines.no(), std::string(key) + ": bad value " + quote(val)); };
    auto num = [&](auto* out, int base = 10) {
      if (!to_num(val, out, base)) bad();
    };
    // Blank-separated numbers; at least min_n, at most max_n.
    auto list = [&](auto* out, size_t min_n, size_t max_n) {
      out->clear();
      std::string_view rest = val;
      for (std::string_view tok = next_token(&rest); !tok.empty(); tok = next_token(&rest)) {
        typename std::remove_reference_t<decltype(*out)>::value_type v;
        if (out->size() >= max_n || !to_num(tok, &v)) bad();
        out->push_back(v);
      }
      if (out->size() < min_n) bad();
    };
    auto ids = [&](uint32_t(&out)[4]) {
      std::vector<uint32_t> v;
      list(&v, 4, 4);
      std::copy(v.begin(), v.end(), out);
    };

    if (key == "Name") {
      // Not trimmed: a comm may end in blanks. The kernel writes one tab.
      if (!raw.empty() && raw.front() == '\t') raw.remove_prefix(1);
      st.name = unescape_name(raw);
      seen |= kName;
    } else if (key == "Umask") {
      num(&st.umask, 8);
    } else if (key == "State") {
      if (val.empty()) bad();
      st.state = val[0];
      seen |= kState;
    } else if (key == "Tgid") {
      num(&st.tgid);
      seen |= kTgid;
    } else if (key == "Pid") {
      num(&st.pid);
      seen |= kPid;
    } else if (key == "PPid") {
      num(&st.ppid);
      seen |= kPPid;
    } else if (key == "Uid") {
      ids(st.uid);
      seen |= kUid;
    } else if (key == "Gid") {
      ids(st.gid);
      seen |= kGid;
    } else if (key == "Groups") {
      list(&st.groups, 0, SIZE_MAX);
    } else if (key == "NStgid") {
      list(&st.nstgid, 1, SIZE_MAX);
    } else if (key == "NSpid") {
      list(&st.nspid, 1, SIZE_MAX);
    } else if (key == "NSpgid") {
      list(&st.nspgid, 1, SIZE_MAX);
    } else if (key == "NSsid") {
      list(&st.nssid, 1, SIZE_MAX);
    } else if (key == "Threads") {
      num(&st.threads);
    } else if (key == "SigPnd") {
      num(&st.sig_pnd, 16);
    } else if (key == "ShdPnd") {
      num(&st.shd_pnd, 16);
    } else if (key == "SigBlk") {
      num(&st.sig_blk, 16);
    } else if (key == "SigIgn") {
      num(&st.sig_ign, 16);
    } else if (key == "SigCgt") {
      num(&st.sig_cgt, 16);
    } else if (key == "CapInh") {
      num(&st.cap_inh, 16);
    } else if (key == "CapPrm") {
      num(&st.cap_prm, 16);
    } else if (key == "CapEff") {
      num(&st.cap_eff, 16);
    } else if (key == "CapBnd") {
      num(&st.cap_bnd, 16);
    } else if (key == "CapAmb") {
      num(&st.cap_amb, 16);
    } else if (key == "NoNewPrivs") {
      num(&st.no_new_privs);
    } else if (key == "Seccomp") {
      num(&st.seccomp);
    } else if (key == "Seccomp_filters") {
      num(&st.seccomp_filters);
    } else if (key == "RssAnon" || key == "VmSwap") {
      std::string_view rest = val;
      std::string_view n = next_token(&rest);
      if (!to_num(n, key == "RssAnon" ? &st.rss_anon_kb : &st.swap_kb) || trim(rest) != "kB")
        bad();
    }
  }
  static constexpr std::pair<unsigned, const char*> kRequired[] = {
      {kName, "Name"}, {kState, "State"}, {kTgid, "Tgid"}, {kPid, "Pid"},
      {kPPid, "PPid"}, {kUid, "Uid"},     {kGid, "Gid"}};
  for (auto [bit, name] : kRequired)
    if (!(seen & bit)) fail(what, strfmt("no '%s:' line", name));
  return st;
}

// ---- smaps, maps --------------------------------------------------------------

// "start-end perms pgoff major:minor inode   [path]"
void parse_vma_header(std::string_view line, Vma* v, const std::string& what, int no) {
  std::string_view rest = line;
  std::string_view range = next_token(&rest);
  size_t dash = range.find('-');
  if (dash == std::string_view::npos || !to_num(range.substr(0, dash), &v->start, 16) ||
      !to_num(range.substr(dash + 1), &v->end, 16) || v->start > v->end)
    fail(what, no, "bad address range " + quote(range));

  std::string_view perms = next_token(&rest);
  if (perms.size() != 4 || (perms[0] != 'r' && perms[0] != '-') ||
      (perms[1] != 'w' && perms[1] != '-') || (perms[2] != 'x' && perms[2] != '-') ||
      (perms[3] != 'p' && perms[3] != 's'))
    fail(what, no, "bad permissions " + quote(perms));
  v->r = perms[0] == 'r';
  v->w = perms[1] == 'w';
  v->x = perms[2] == 'x';
  v->shared = perms[3] == 's';

  std::string_view off = next_token(&rest);
  if (!to_num(off, &v->pgoff, 16)) fail(what, no, "bad offset " + quote(off));

  std::string_view dev = next_token(&rest);
  size_t colon = dev.find(':');
  if (colon == std::string_view::npos || !to_num(dev.substr(0, colon), &v->dev_major, 16) ||
      !to_num(dev.substr(colon + 1), &v->dev_minor, 16))
    fail(what, no, "bad device " + quote(dev));

  std::string_view ino = next_token(&rest);
  if (!to_num(ino, &v->inode)) fail(what, no, "bad inode " + quote(ino));

  // The path starts after the padding; it may itself contain spaces.
  size_t b = 0;
  while (b < rest.size() && rest[b] == ' ') b++;
  std::string_view path = rest.substr(b);
  constexpr std::string_view kDeleted = " (deleted)";
  if (path.size() > kDeleted.size() && path.ends_with(kDeleted)) {
    v->deleted = true;
    path.remove_suffix(kDeleted.size());
  }
  v->path.assign(path);
}

// "Rss:                   8 kB"
void parse_kb(std::string_view key, std::string_view val, uint64_t* out, const std::string& what,
              int no) {
  std::string_view rest = val;
  std::string_view n = next_token(&rest);
  std::string_view unit = next_token(&rest);
  if (!to_num(n, out) || unit != "kB" || !trim(rest).empty())
    fail(what, no, std::string(key) + ": bad value " + quote(trim(val)));
}

std::vector<Vma> parse_vmas(std::string_view text, const std::string& what, bool smaps) {
  std::vector<Vma> out;
  bool has_vmflags = true;  // of out.back()
  auto check_vmflags = [&](int no) {
    if (smaps && !has_vmflags)
      fail(what, no,
           strfmt("mapping %llx-%llx has no VmFlags line (truncated?)",
                  static_cast<unsigned long long>(out.back().start),
                  static_cast<unsigned long long>(out.back().end)));
  };
  Lines lines(text);
  std::string_view line;
  while (lines.next(&line)) {
    if (line.empty()) continue;
    // A field's key ("Rss:") is its first word; a header's first word is the
    // address range, which has no ':'.
    size_t colon = line.find(':');
    size_t blank = line.find_first_of(" \t");
    bool field = smaps && colon != std::string_view::npos && colon < blank;
    if (!field) {
      Vma v;
      parse_vma_header(line, &v, what, lines.no());  // garbage says so, not "truncated"
      check_vmflags(lines.no());
      out.push_back(std::move(v));
      has_vmflags = false;
      continue;
    }
    std::string_view key = line.substr(0, colon);
    std::string_view val = line.substr(colon + 1);
    if (out.empty()) fail(what, lines.no(), "field before the first mapping: " + quote(line));
    Vma& v = out.back();
    if (key == "Rss") {
      parse_kb(key, val, &v.rss_kb, what, lines.no());
    } else if (key == "Swap") {
      parse_kb(key, val, &v.swap_kb, what, lines.no());
    } else if (key == "Anonymous") {
      parse_kb(key, val, &v.anonymous_kb, what, lines.no());
    } else if (key == "VmFlags") {
      if (has_vmflags) fail(what, lines.no(), "second VmFlags line for one mapping");
      has_vmflags = true;
      for (std::string_view tok = next_token(&val); !tok.empty(); tok = next_token(&val))
        v.vm_flags.emplace_back(tok);
    }
  }
  if (!out.empty()) check_vmflags(lines.no());
  return out;
}

// ---- fdinfo -------------------------------------------------------------------

FdInfo parse_fdinfo_named(std::string_view text, const std::string& what) {
  FdInfo fi;
  bool have_pos = false, have_flags = false;
  Lines lines(text);
  std::string_view line;
  while (lines.next(&line)) {
    if (trim(line).empty()) continue;
    size_t colon = line.find(':');
    std::string_view key =
        colon == std::string_view::npos ? std::string_view() : trim(line.substr(0, colon));
    if (key.empty()) {
      // Some kinds print free-form lines (io_uring's "op=6, task_works=0"):
      // kept whole under an empty key, for the kind's own parser to judge.
      fi.extra.emplace_back(std::string(), std::string(trim(line)));
      continue;
    }
    std::string_view val = trim(line.substr(colon + 1));
    auto bad = [&]() { fail(what, lines.no(), std::string(key) + ": bad value " + quote(val)); };
    if (key == "pos") {
      // "%lld": negative for files with unsigned offsets (/dev/mem); keep the bits.
      int64_t spos;
      if (to_num(val, &fi.pos)) {
      } else if (to_num(val, &spos)) {
        fi.pos = static_cast<uint64_t>(spos);
      } else {
        bad();
      }
      have_pos = true;
    } else if (key == "flags") {
      if (!to_num(val, &fi.flags, 8)) bad();
      have_flags = true;
    } else if (key == "mnt_id") {
      if (!to_num(val, &fi.mnt_id)) bad();
    } else if (key == "ino") {
      if (!to_num(val, &fi.ino)) bad();
    } else {
      fi.extra.emplace_back(key, val);
    }
  }
  if (!have_pos) fail(what, "no 'pos:' line");
  if (!have_flags) fail(what, "no 'flags:' line");
  return fi;
}

// ---- limits -------------------------------------------------------------------

struct LimitRow {
  std::string_view name;
  int resource;
};
// In kernel order (fs/proc/base.c lnames[]), which is RLIMIT_* order.
constexpr LimitRow kLimitRows[] = {
    {"Max cpu time", RLIMIT_CPU},
    {"Max file size", RLIMIT_FSIZE},
    {"Max data size", RLIMIT_DATA},
    {"Max stack size", RLIMIT_STACK},
    {"Max core file size", RLIMIT_CORE},
    {"Max resident set", RLIMIT_RSS},
    {"Max processes", RLIMIT_NPROC},
    {"Max open files", RLIMIT_NOFILE},
    {"Max locked memory", RLIMIT_MEMLOCK},
    {"Max address space", RLIMIT_AS},
    {"Max file locks", RLIMIT_LOCKS},
    {"Max pending signals", RLIMIT_SIGPENDING},
    {"Max msgqueue size", RLIMIT_MSGQUEUE},
    {"Max nice priority", RLIMIT_NICE},
    {"Max realtime priority", RLIMIT_RTPRIO},
    {"Max realtime timeout", RLIMIT_RTTIME},
};
constexpr int kNumLimits = sizeof kLimitRows / sizeof kLimitRows[0];
static_assert(kNumLimits == RLIMIT_NLIMITS);

std::vector<Limit> parse_limits_named(std::string_view text, const std::string& what) {
  std::vector<Limit> out(kNumLimits);
  bool seen[kNumLimits] = {};
  Lines lines(text);
  std::string_view line;
  while (lines.next(&line)) {
    if (trim(line).empty() || line.starts_with("Limit ")) continue;  // header
    const LimitRow* row = nullptr;
    for (const LimitRow& r : kLimitRows) {
      if (line.size() > r.name.size() && line.starts_with(r.name) && line[r.name.size()] == ' ') {
        row = &r;
        break;
      }
    }
    if (!row) fail(what, lines.no(), "unknown limit " + quote(line));
    if (seen[row->resource]) fail(what, lines.no(), "second '" + std::string(row->name) + "' line");
    seen[row->resource] = true;

    std::string_view rest = line.substr(row->name.size());
    std::string_view soft = next_token(&rest);
    std::string_view hard = next_token(&rest);
    next_token(&rest);  // units, absent for the priorities
    if (!trim(rest).empty()) fail(what, lines.no(), "trailing text " + quote(trim(rest)));
    auto value = [&](std::string_view s, uint64_t* v) {
      if (s == "unlimited") {
        *v = ~uint64_t{0};
      } else if (!to_num(s, v)) {
        fail(what, lines.no(), std::string(row->name) + ": bad value " + quote(s));
      }
    };
    Limit& l = out[row->resource];
    l.resource = row->resource;
    value(soft, &l.cur);
    value(hard, &l.max);
  }
  for (const LimitRow& r : kLimitRows)
    if (!seen[r.resource]) fail(what, "no '" + std::string(r.name) + "' line");
  return out;
}

// ---- mountinfo ----------------------------------------------------------------

std::vector<Mount> parse_mountinfo_named(std::string_view text, const std::string& what) {
  std::vector<Mount> out;
  std::vector<std::string_view> f;
  Lines lines(text);
  std::string_view line;
  while (lines.next(&line)) {
    if (line.empty()) continue;
    // Fields are separated by exactly one space (spaces inside are escaped),
    // so an empty source shows as two spaces in a row.
    f.clear();
    for (std::string_view rest = line;;) {
      size_t sp = rest.find(' ');
      f.push_back(rest.substr(0, sp));
      if (sp == std::string_view::npos) break;
      rest.remove_prefix(sp + 1);
    }
    size_t sep = 6;
    while (sep < f.size() && f[sep] != "-") sep++;
    if (sep + 3 >= f.size())
      fail(what, lines.no(),
           "expected 'id parent maj:min root mountpoint options [optional...] - type source "
           "superoptions', got " +
               quote(line));

    // Only the source may be empty.
    for (size_t i : {size_t{3}, size_t{4}, size_t{5}, sep + 1, sep + 3})
      if (f[i].empty()) fail(what, lines.no(), "empty field in " + quote(line));

    Mount& m = out.emplace_back();
    if (!to_num(f[0], &m.mnt_id)) fail(what, lines.no(), "bad mount id " + quote(f[0]));
    if (!to_num(f[1], &m.parent_id)) fail(what, lines.no(), "bad parent id " + quote(f[1]));
    size_t colon = f[2].find(':');
    if (colon == std::string_view::npos || !to_num(f[2].substr(0, colon), &m.dev_major) ||
        !to_num(f[2].substr(colon + 1), &m.dev_minor))
      fail(what, lines.no(), "bad device " + quote(f[2]));
    m.root = unescape_octal(f[3]);
    m.mount_point = unescape_octal(f[4]);
    m.mount_options.assign(f[5]);
    for (size_t i = 6; i < sep; i++) m.optional_fields.emplace_back(f[i]);
    m.fstype.assign(f[sep + 1]);
    m.source = unescape_octal(f[sep + 2]);
    // Super options have no spaces; join any that appear rather than lose them.
    for (size_t i = sep + 3; i < f.size(); i++) {
      if (i > sep + 3) m.super_options += ' ';
      m.super_options.append(f[i]);
    }
  }
  if (out.empty()) fail(what, "no mounts");
  return out;
}

// ---- pid lists, directories ---------------------------------------------------

std::vector<pid_t> parse_pid_list_named(std::string_view text, const std::string& what) {
  std::vector<pid_t> out;
  std::string_view rest = text;
  for (std::string_view tok = next_token(&rest); !tok.empty(); tok = next_token(&rest)) {
    pid_t p;
    if (!to_num(tok, &p) || p <= 0) fail(what, "bad pid " + quote(tok));
    out.push_back(p);
  }
  return out;
}

// The numeric entries of a /proc directory, unsorted; skip_fd is left out.
template <class T>
std::vector<T> numeric_entries(const std::string& dir, bool skip_own_fd = false) {
  std::unique_ptr<DIR, int (*)(DIR*)> d(opendir(dir.c_str()), closedir);
  if (!d) throw_errno("open " + dir);
  int own = skip_own_fd ? dirfd(d.get()) : -1;
  std::vector<T> out;
  for (;;) {
    errno = 0;
    dirent* e = readdir(d.get());
    if (!e) {
      if (errno != 0) throw_errno("read " + dir);
      break;
    }
    T v;
    if (!to_num(std::string_view(e->d_name), &v)) continue;
    if (own >= 0 && static_cast<int>(v) == own) continue;
    out.push_back(v);
  }
  return out;
}

}  // namespace

bool Vma::has_flag(std::string_view f) const {
  return std::find(vm_flags.begin(), vm_flags.end(), f) != vm_flags.end();
}

Stat parse_stat(std::string_view text) {
  return parse_stat_named(text, "stat");
}

Stat read_stat(pid_t pid) {
  std::string path = proc_path(pid, "stat");
  return parse_stat_named(read_file(path), "parse " + path);
}

Stat read_thread_stat(pid_t pid, pid_t tid) {
  std::string path = strfmt("/proc/%d/task/%d/stat", pid, tid);
  return parse_stat_named(read_file(path), "parse " + path);
}

Status parse_status(std::string_view text) {
  return parse_status_named(text, "status");
}

Status read_status(pid_t pid) {
  std::string path = proc_path(pid, "status");
  return parse_status_named(read_file(path), "parse " + path);
}

std::vector<Vma> parse_smaps(std::string_view text) {
  return parse_vmas(text, "smaps", true);
}
std::vector<Vma> parse_maps(std::string_view text) {
  return parse_vmas(text, "maps", false);
}

std::vector<Vma> read_smaps(pid_t pid) {
  std::string path = proc_path(pid, "smaps");
  return parse_vmas(read_file(path), "parse " + path, true);
}

std::vector<Vma> read_maps(pid_t pid) {
  std::string path = proc_path(pid, "maps");
  return parse_vmas(read_file(path), "parse " + path, false);
}

FdInfo parse_fdinfo(std::string_view text) {
  return parse_fdinfo_named(text, "fdinfo");
}

FdInfo read_fdinfo(pid_t pid, int fd) {
  std::string path = strfmt("/proc/%d/fdinfo/%d", pid, fd);
  return parse_fdinfo_named(read_file(path), "parse " + path);
}

std::vector<Limit> parse_limits(std::string_view text) {
  return parse_limits_named(text, "limits");
}

std::vector<Limit> read_limits(pid_t pid) {
  std::string path = proc_path(pid, "limits");
  return parse_limits_named(read_file(path), "parse " + path);
}

std::vector<pid_t> parse_pid_list(std::string_view text) {
  return parse_pid_list_named(text, "pid list");
}

std::vector<pid_t> list_threads(pid_t pid) {
  std::vector<pid_t> tids = numeric_entries<pid_t>(proc_path(pid, "task"));
  std::sort(tids.begin(), tids.end());
  auto leader = std::find(tids.begin(), tids.end(), pid);
  if (leader != tids.end()) std::rotate(tids.begin(), leader, leader + 1);
  return tids;
}

std::vector<pid_t> list_children(pid_t pid) {
  std::vector<pid_t> out;
  bool any = false;
  int last_err = 0;
  std::string last_path;
  for (pid_t tid : list_threads(pid)) {
    std::string path = strfmt("/proc/%d/task/%d/children", pid, tid);
    std::string text;
    if (!try_read_file(path, &text)) {
      int err = errno;
      // The thread exited since we listed it.
      if (err == ENOENT || err == ESRCH) {
        last_err = err;
        last_path = path;
        continue;
      }
      throw_errno(err, "read " + path);
    }
    any = true;
    std::vector<pid_t> kids = parse_pid_list_named(text, "parse " + path);
    out.insert(out.end(), kids.begin(), kids.end());
  }
  // Every thread gone, or a kernel without CONFIG_PROC_CHILDREN.
  if (!any && last_err != 0) throw_errno(last_err, "read " + last_path);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<int> list_fds(pid_t pid) {
  // Listing our own fds opens one more: leave that one out.
  std::vector<int> fds = numeric_entries<int>(proc_path(pid, "fd"), pid == getpid());
  std::sort(fds.begin(), fds.end());
  return fds;
}

std::vector<uint64_t> parse_auxv(std::string_view bytes) {
  if (bytes.size() % sizeof(uint64_t) != 0)
    throw Error(strfmt("auxv: %zu bytes is not a whole number of words", bytes.size()));
  std::vector<uint64_t> words(bytes.size() / sizeof(uint64_t));
  if (!words.empty()) memcpy(words.data(), bytes.data(), bytes.size());
  return words;
}

std::vector<uint64_t> read_auxv(pid_t pid) {
  std::string path = proc_path(pid, "auxv");
  std::string bytes = read_file(path);
  return in_context("parse " + path, [&] { return parse_auxv(bytes); });
}

std::vector<Mount> parse_mountinfo(std::string_view text) {
  return parse_mountinfo_named(text, "mountinfo");
}

std::vector<Mount> read_mountinfo(pid_t pid) {
  std::string path = proc_path(pid, "mountinfo");
  return parse_mountinfo_named(read_file(path), "parse " + path);
}

}  // namespace ckpt::proc
