#!/usr/bin/env python3
"""End-to-end tests of ckpt: real workloads dumped, killed, restored, compared.

Usage:
    ckpt_e2e.py --ckpt BUILD/ckpt --workloads BUILD/tests/workloads SCENARIO
                [--iters N] [--workload NAME] [--keep] [--timeout SECONDS]
    ckpt_e2e.py --list

Exit status: 0 pass, 1 fail (the last line says why), 77 skip (with a reason).

A workload (tests/workloads/wl_*.c, protocol in wl.h) sets up kernel state,
logs `ready`, then keeps checking its own invariants, logging `progress N`
and `FAIL <pid>: ...` if one breaks.  A cycle of a scenario:

  1. sample the tree twice from /proc (pids, tids and thread names, ppid,
     pgid, sid, maps without [vvar*], fd targets, fdinfo flags/pos/mnt_id);
     fd offsets that moved between the samples are the workload's to check,
     the others must come back exactly;
  2. `ckpt dump`; the tree must be gone;
  3. `ckpt restore -d --pidfile`; the same pids and tids must exist with the
     same attributes, maps and fds;
  4. the log must continue where it stopped (first new progress = last + 1,
     consecutive, at least 10 more), with no FAIL and a single `start`.
After the last cycle the tree is watched for 7 s more, so that watchdogs
(a peer stuck for 5 s, e.g. a shared mapping no longer shared) can fire.

Scenarios: one per workload (memory threads tree pipes files signals
identity counter ... sysv pty), plus leave-running, repeat, restore-after-kill,
fault-dump, fault-restore, bad-images, shell-job and container-run (see the
sc_* functions).

Workload trees use global PIDs, so scenarios must run one at a time.  Every
process a scenario started is killed and its temp dir removed on any exit
path (finally, atexit, SIGTERM/SIGINT/SIGHUP, and an internal deadline below
CTest's timeout).
"""

import argparse
import atexit
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77

WORKLOADS = ("shmfile", "memory", "threads", "tree", "pipes", "files", "signals", "identity", "counter", "attrs", "evfds", "ghost", "unix", "zombie", "sysv", "pty")
DUMP_FAULTS = ("dump-after-seize", "dump-after-core", "dump-after-pages", "dump-before-inventory")
RESTORE_FAULTS = ("restore-after-fork", "restore-after-files", "restore-after-mm",
                  "restore-before-resume")

READY_TIMEOUT = 20.0      # workload start to `ready`
PROGRESS_TIMEOUT = 30.0   # for the log to advance after a restore / failed dump
CKPT_TIMEOUT = 60.0       # any ckpt command
BAD_IMAGE_TIMEOUT = 10.0  # a restore of corrupted images must fail this fast
GONE_TIMEOUT = 5.0        # for dumped/killed tasks to die
VANISH_TIMEOUT = 10.0     # for dead tasks to be reaped (PID 1 reaps late here)
PROGRESS_STEP = 10        # progress lines a resumed workload must add
WARMUP_PROGRESS = 3       # progress lines after `ready` before the first dump
SAMPLE_GAP = 0.3          # between the two pre-dump samples
WATCH_AFTER = 7.0         # keep watching after the last restore: the workloads'
                          # watchdogs fire after 5 s of a stuck peer, and
                          # wl_signals releases its pending signals at progress 50

_T0 = time.monotonic()


class Failure(Exception):
    """A check failed; str() is the one-line reason."""


class Skip(Exception):
    """The scenario cannot run here; str() is the reason."""


class Interrupted(Exception):
    """A termination signal arrived."""


def note(msg):
    print(f"[{time.monotonic() - _T0:7.2f}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# /proc
# ---------------------------------------------------------------------------

def read_text(path, default=None):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def read_link(path, default=None):
    try:
        return os.readlink(path)
    except OSError:
        return default


def proc_stat(pid):
    """(state, ppid, pgid, sid) of a task, or None if it does not exist."""
    data = read_text(f"/proc/{pid}/stat")
    if not data:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


def task_alive(pid):
    """True if the task exists and is not a zombie."""
    st = proc_stat(pid)
    return st is not None and st[0] not in "ZXx"


def task_exists(pid):
    return os.path.exists(f"/proc/{pid}")


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def task_tids(pid):
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return []


def tree_pids(root):
    """The live tree rooted at root (by ppid), root first, then sorted."""
    children = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st and st[0] not in "ZXx":
            children.setdefault(st[1], []).append(pid)
    if not task_alive(root):
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return [root] + sorted(out[1:])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------------------
# Snapshots of a tree as /proc shows it
# ---------------------------------------------------------------------------

MAPS_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")
ANON_INODE_RE = re.compile(r"^(\w+):\[(\d+)\]$")


def read_maps(pid):
    """Normalized mappings: [vvar*] dropped, adjacent equivalent VMAs merged
    (restore may split or merge them differently), inode kept only for real
    files (a restored pipe or shmem object is a new inode)."""
    text = read_text(f"/proc/{pid}/maps")
    if text is None:
        raise Failure(f"cannot read /proc/{pid}/maps (task gone?)")
    merged = []
    for line in text.splitlines():
        m = MAPS_RE.match(line)
        if not m:
            continue
        start, end = int(m[1], 16), int(m[2], 16)
        perms, off, inode, path = m[3], int(m[4], 16), int(m[6]), m[7].strip()
        if path.startswith("[vvar"):
            continue
        file_backed = path.startswith("/")
        real_file = (file_backed and not path.endswith("(deleted)")
                     and not path.startswith(("/dev/zero", "/SYSV", "/memfd:")))
        ident = (perms, path, inode if real_file else None)
        if merged:
            prev = merged[-1]
            if (prev["end"] == start and prev["ident"] == ident
                    and (not file_backed or prev["off"] + (prev["end"] - prev["start"]) == off)):
                prev["end"] = end
                continue
        merged.append({"start": start, "end": end, "off": off, "ident": ident,
                       "file": file_backed})
    out = []
    for e in merged:
        perms, path, inode = e["ident"]
        s = f"{e['start']:x}-{e['end']:x} {perms} {path or '(anon)'}"
        if e["file"]:
            s += f" off={e['off']:x}"
        if inode is not None:
            s += f" ino={inode}"
        out.append(s)
    return out


def read_fdinfo(pid, fd):
    text = read_text(f"/proc/{pid}/fdinfo/{fd}")
    if text is None:
        return None
    info = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("pos", "flags", "mnt_id"):
            info[key] = value.strip()
    return info


def capture(root):
    """{pid: task view} for the live tree rooted at root."""
    pids = tree_pids(root)
    if not pids:
        raise Failure(f"workload root {root} is not running")
    snap = {}
    for pid in pids:
        st = proc_stat(pid)
        if st is None:
            raise Failure(f"task {pid} vanished while being inspected")
        threads = {}
        for tid in task_tids(pid):
            comm = read_text(f"/proc/{pid}/task/{tid}/comm")
            if comm is not None:
                # With its CPU affinity: the dump pins every thread to its
                # own CPU while it drives them, and must put that back.
                cpus = re.search(r"^Cpus_allowed_list:\s*(\S+)",
                                 read_text(f"/proc/{pid}/task/{tid}/status", ""), re.M)
                threads[tid] = comm.strip() + (f" cpus={cpus[1]}" if cpus else "")
        fds = {}
        try:
            fd_names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            raise Failure(f"cannot list /proc/{pid}/fd")
        for name in fd_names:
            target = read_link(f"/proc/{pid}/fd/{name}")
            info = read_fdinfo(pid, name)
            if target is None or info is None:
                continue  # closed meanwhile: a transient fd
            fds[int(name)] = dict(info, target=target)
        snap[pid] = {"ppid": st[1], "pgid": st[2], "sid": st[3], "threads": threads,
                     "maps": read_maps(pid), "fds": fds}
    # pipe:[123] -> pipe:#0: inodes differ after restore, sharing must not.
    labels = {}
    for pid in sorted(snap):
        for fd in sorted(snap[pid]["fds"]):
            f = snap[pid]["fds"][fd]
            m = ANON_INODE_RE.match(f["target"])
            if m:
                key = (m[1], m[2])
                labels.setdefault(key, f"{m[1]}:#{sum(1 for k in labels if k[0] == m[1])}")
                f["target"] = labels[key]
    return snap


def inner_ids(path):
    """(pid, pgid, sid) innermost in their pid namespace, from a status file."""
    text = read_text(path) or ""
    ids = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("NSpid", "NSpgid", "NSsid") and value.split():
            ids[key] = int(value.split()[-1])
    return ids.get("NSpid"), ids.get("NSpgid"), ids.get("NSsid")


def ns_view(snap):
    """A snapshot with every id as the tree sees it inside its own pid
    namespace: a tree restored there has other pids on the host."""
    inner = {pid: inner_ids(f"/proc/{pid}/status") for pid in snap}
    out = {}
    for pid, v in snap.items():
        ipid, pgid, sid = inner[pid]
        if ipid is None:
            raise Failure(f"task {pid} vanished while being inspected")
        threads = {}
        for tid, comm in v["threads"].items():
            itid = inner_ids(f"/proc/{pid}/task/{tid}/status")[0]
            threads[itid if itid is not None else f"gone:{tid}"] = comm
        ppid = inner[v["ppid"]][0] if v["ppid"] in inner else "outside"
        out[ipid] = dict(v, ppid=ppid, pgid=pgid, sid=sid, threads=threads)
    return out


def fd_desc(f, with_pos):
    s = f"{f['target']} flags={f.get('flags')} mnt={f.get('mnt_id')}"
    if with_pos:
        s += f" pos={f.get('pos')}"
    return s


def diff_snapshots(a, b, root, stable=frozenset(), ignore=frozenset()):
    """Differences between two snapshots, as readable lines.

    The root's ppid is not compared (a detached restore reparents it).
    stable: (pid, fd) whose offset must match; ignore: (pid, fd) to skip."""
    out = []
    if set(a) != set(b):
        out.append(f"processes differ: missing {sorted(set(a) - set(b))}, "
                   f"unexpected {sorted(set(b) - set(a))}")
    for pid in sorted(set(a) & set(b)):
        ta, tb = a[pid], b[pid]
        keys = ("pgid", "sid") if pid == root else ("ppid", "pgid", "sid")
        for k in keys:
            if ta[k] != tb[k]:
                out.append(f"pid {pid}: {k} {ta[k]} -> {tb[k]}")
        if ta["threads"] != tb["threads"]:
            out.append(f"pid {pid}: threads {ta['threads']} -> {tb['threads']}")
        if ta["maps"] != tb["maps"]:
            sb, sa = set(tb["maps"]), set(ta["maps"])
            lost = [m for m in ta["maps"] if m not in sb]
            new = [m for m in tb["maps"] if m not in sa]
            out.append(f"pid {pid}: maps differ: lost {lost[:4]}, new {new[:4]}"
                       + (" (order)" if not lost and not new else ""))
        fa = {fd: f for fd, f in ta["fds"].items() if (pid, fd) not in ignore}
        fb = {fd: f for fd, f in tb["fds"].items() if (pid, fd) not in ignore}
        if set(fa) != set(fb):
            out.append(f"pid {pid}: fds differ: missing {sorted(set(fa) - set(fb))}, "
                       f"unexpected {sorted(set(fb) - set(fa))}")
        for fd in sorted(set(fa) & set(fb)):
            with_pos = (pid, fd) in stable
            da, db = fd_desc(fa[fd], with_pos), fd_desc(fb[fd], with_pos)
            if da != db:
                out.append(f"pid {pid} fd {fd}: {da} -> {db}")
    return out


def snapshot_tasks(snap):
    """Every pid and tid of a snapshot."""
    return sorted({t for view in snap.values() for t in view["threads"]} | set(snap))


# ---------------------------------------------------------------------------
# Workload log
# ---------------------------------------------------------------------------

PROGRESS_RE = re.compile(r"^progress (\d+)$")


class LogView:
    """Complete lines of the workload log from a byte offset."""

    def __init__(self, path, offset=0):
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            data = b""
        end = data.rfind(b"\n") + 1  # ignore a line being written
        self.end = offset + end
        self.lines = data[:end].decode(errors="replace").splitlines()
        self.progress = [int(m[1]) for m in map(PROGRESS_RE.match, self.lines) if m]
        self.fails = [l for l in self.lines if l.startswith("FAIL")]
        self.starts = [l for l in self.lines if l.startswith("start ")]
        self.ready = "ready" in self.lines

    def last_progress(self):
        return self.progress[-1] if self.progress else 0


# ---------------------------------------------------------------------------
# ckpt runner
# ---------------------------------------------------------------------------

class CkptResult:
    def __init__(self, rc, stdout, stderr, log_path, seconds):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.log_path, self.seconds = log_path, seconds

    def error_line(self):
        lines = [l for l in self.stderr.splitlines() if l.strip()]
        return lines[-1].strip() if lines else "(no message on stderr)"

    def show(self):
        """Print what ckpt said, for diagnosis."""
        if self.stderr.strip():
            note("  ckpt stderr:\n    " + "\n    ".join(self.stderr.strip().splitlines()[-15:]))
        log = read_text(self.log_path, "") if self.log_path else ""
        if log.strip():
            note(f"  ckpt log ({self.log_path}), last lines:\n    "
                 + "\n    ".join(log.strip().splitlines()[-25:]))


class Ckpt:
    def __init__(self, path):
        self.path = path
        self.count = 0
        self.running = []

    def run(self, args, tmp, label, fault=None, timeout=CKPT_TIMEOUT, verbose=True):
        """Runs ckpt with output to files (a detached tree must not hold our pipes)."""
        self.count += 1
        stem = os.path.join(tmp, f"{self.count:02d}-{label}")
        log_path = stem + ".log" if verbose else None
        cmd = [self.path] + args + (["-v", "--log-file", log_path] if verbose else [])
        env = dict(os.environ)
        env.pop("CKPT_FAULT", None)
        if fault:
            env["CKPT_FAULT"] = fault
        note(("CKPT_FAULT=%s " % fault if fault else "") + " ".join(cmd))
        t0 = time.monotonic()
        with open(stem + ".out", "w+") as out, open(stem + ".err", "w+") as err:
            try:
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env, cwd=tmp)
            except OSError as e:
                raise Failure(f"cannot run {self.path}: {e.strerror}")
            self.running.append(p)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                out.seek(0)
                err.seek(0)
                CkptResult(None, out.read(), err.read(), log_path, timeout).show()
                raise Failure(f"ckpt {args[0]} did not finish within {timeout:.0f} s")
            except BaseException:  # deadline or signal: do not leave ckpt running
                p.kill()
                p.wait()
                raise
            finally:
                self.running.remove(p)
            out.seek(0)
            err.seek(0)
            res = CkptResult(rc, out.read(), err.read(), log_path, time.monotonic() - t0)
        note(f"  -> exit {rc} in {res.seconds:.2f} s")
        return res

    def dump(self, wl, imgdir, leave_running=False, fault=None, extra=(), verbose=True):
        args = ["dump", "-t", str(wl.root), "-D", imgdir] + list(extra)
        if leave_running:
            args.append("--leave-running")
        return self.run(args, wl.tmp, "dump", fault=fault, verbose=verbose)

    def restore(self, wl, imgdir, fault=None, timeout=CKPT_TIMEOUT, verbose=True, extra=()):
        pidfile = os.path.join(wl.tmp, f"restore-{self.count + 1}.pid")
        args = ["restore", "-D", imgdir, "-d", "--pidfile", pidfile] + list(extra)
        res = self.run(args, wl.tmp, "restore", fault=fault, timeout=timeout, verbose=verbose)
        res.pidfile = pidfile
        return res


# ---------------------------------------------------------------------------
# A running workload tree
# ---------------------------------------------------------------------------

class Workload:
    def __init__(self, env, name, args=()):
        self.env, self.name = env, name
        self.args = list(args)
        self.binary = os.path.realpath(os.path.join(env.workloads_dir, "wl_" + name))
        if not os.access(self.binary, os.X_OK):
            raise Failure(f"workload binary {self.binary} is missing (build the wl_* targets)")
        self.tmp = tempfile.mkdtemp(prefix=f"ckpt-e2e-{name}-")
        self.dir = os.path.join(self.tmp, "dir")
        os.mkdir(self.dir)
        self.log_path = os.path.join(self.tmp, "workload.log")
        self.proc = None
        self.root = None
        self.seen = set()   # every pid/tid ever part of the tree
        self.ndirs = 0
        # Started as the init of a pid namespace of its own: snapshots are
        # compared by the ids inside it, and the root's host pid changes
        # with each restore.
        self.pidns = False
        # The restore stubs its restores must use (STUBS), None: not checked.
        self.expect_stubs = None

    # -- lifecycle --

    def start(self, prefix=(), spawn=None):
        """prefix: a command that runs the workload (e.g. unshare); the
        root is then its only child. spawn(wl) -> (Popen, root pid) starts
        it another way (sc_shell_job)."""
        open(self.log_path, "a").close()
        if spawn:
            self.proc, self.root = spawn(self)
        else:
            self.proc = subprocess.Popen(
                list(prefix) + [self.binary, "--log", self.log_path, "--dir", self.dir]
                + self.args,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, cwd=self.tmp)
            self.root = self.proc.pid
        if prefix:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                kids = read_text(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children", "")
                if kids.split():
                    self.root = int(kids.split()[0])
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise Failure(f"{prefix[0]} did not start wl_{self.name}")
                time.sleep(0.02)
        self.seen.add(self.root)
        note(f"started wl_{self.name} as pid {self.root} (tmp {self.tmp})")
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            log = self.log()
            self.check_no_fail(log)
            if log.ready:
                break
            if self.proc.poll() is not None:
                raise Failure(f"wl_{self.name} exited with status {self.proc.returncode} "
                              "before ready")
            if time.monotonic() > deadline:
                raise Failure(f"wl_{self.name} not ready within {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
        self.remember()
        # Let the check loop run a few rounds before anything is dumped.
        self.wait_progress(self.log().end, WARMUP_PROGRESS, "warm-up")
        tasks = self.tasks()
        note(f"wl_{self.name} ready: {len(tree_pids(self.root))} processes, {len(tasks)} tasks")
        return self

    def reap_original(self):
        """Reap the started process once it is dead (it is our child)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                return False
            self.proc = None
        return True

    def new_dir(self, label):
        self.ndirs += 1
        return os.path.join(self.tmp, f"img-{self.ndirs:02d}-{label}")

    # -- state --

    def remember(self):
        for pid in tree_pids(self.root):
            self.seen.add(pid)
            self.seen.update(task_tids(pid))

    def tasks(self):
        return sorted(t for pid in tree_pids(self.root) for t in task_tids(pid))

    def log(self, offset=0):
        return LogView(self.log_path, offset)

    def check_no_fail(self, log=None):
        log = log or self.log()
        if log.fails:
            raise Failure(f"workload reported: {log.fails[0]}")

    def check_health(self):
        log = self.log()
        self.check_no_fail(log)
        if len(log.starts) != 1:
            raise Failure(f"workload started {len(log.starts)} times (restarted instead of "
                          f"restored?): {log.starts}")

    def sample(self):
        """Two snapshots SAMPLE_GAP apart: (snapshot, stable offsets, transient fds)."""
        s1 = self.capture()
        time.sleep(SAMPLE_GAP)
        s2 = self.capture()
        self.remember()
        fds1 = {(p, fd): f for p, v in s1.items() for fd, f in v["fds"].items()}
        fds2 = {(p, fd): f for p, v in s2.items() for fd, f in v["fds"].items()}
        transient = frozenset(set(fds1) ^ set(fds2))
        stable = frozenset(k for k in set(fds1) & set(fds2)
                           if fds1[k].get("pos") == fds2[k].get("pos"))
        drift = diff_snapshots(s1, s2, self.view_root(), ignore=transient)
        if drift:
            for d in drift:
                note("  drift: " + d)
            raise Failure(f"wl_{self.name} changed between two samples before the dump: "
                          f"{drift[0]}")
        return s2, stable, transient

    def capture(self):
        snap = capture(self.root)
        return ns_view(snap) if self.pidns else snap

    def compare(self, before, stable, transient, when):
        after = self.capture()
        self.remember()
        diffs = diff_snapshots(before, after, self.view_root(), stable, transient)
        if diffs:
            for d in diffs:
                note("  diff: " + d)
            raise Failure(f"{when}: /proc differs from before the dump: {diffs[0]}")
        note(f"  /proc matches: {len(after)} processes, "
             f"{sum(len(v['threads']) for v in after.values())} tasks, "
             f"{sum(len(v['maps']) for v in after.values())} maps, "
             f"{sum(len(v['fds']) for v in after.values())} fds "
             f"({len(stable)} offsets compared)")
        return after

    def view_root(self):
        return 1 if self.pidns else self.root

    def wait_progress(self, offset, step, what, strict_first=None, first_range=None):
        """Waits for `step` consecutive progress lines after offset.

        strict_first: the first new progress must be exactly this;
        first_range: or lie within (lo, hi)."""
        deadline = time.monotonic() + PROGRESS_TIMEOUT
        while True:
            log = self.log(offset)
            self.check_no_fail(self.log())
            vals = log.progress
            if vals:
                if strict_first is not None and vals[0] != strict_first:
                    raise Failure(f"{what}: progress resumed at {vals[0]}, expected "
                                  f"{strict_first} (state lost or replayed)")
                if first_range and not first_range[0] <= vals[0] <= first_range[1]:
                    raise Failure(f"{what}: progress resumed at {vals[0]}, expected "
                                  f"{first_range[0]}..{first_range[1]}")
                for a, b in zip(vals, vals[1:]):
                    if b != a + 1:
                        raise Failure(f"{what}: progress jumped from {a} to {b}")
                if vals[-1] >= vals[0] + step - 1 and len(vals) >= step:
                    return vals
            if not task_alive(self.root):
                raise Failure(f"{what}: workload root {self.root} is not running "
                              f"(log: {self.tail()})")
            if time.monotonic() > deadline:
                got = f"{vals[0]}..{vals[-1]}" if vals else "none"
                raise Failure(f"{what}: workload made no progress in {PROGRESS_TIMEOUT:.0f} s "
                              f"(new progress lines: {got})")
            time.sleep(0.1)

    def tail(self, n=3):
        return " | ".join(self.log().lines[-n:])

    def watch(self, seconds=WATCH_AFTER):
        """Keeps the tree under watch for a while: every task stays alive,
        progress stays consecutive, no FAIL appears."""
        tasks = self.tasks()
        start = self.log()
        note(f"watching wl_{self.name} for {seconds:.0f} s")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.check_no_fail()
            dead = [t for t in tasks if not task_alive(t)]
            if dead:
                raise Failure(f"tasks died while watched: {dead} (log: {self.tail()})")
            time.sleep(0.2)
        vals = self.wait_progress(start.end, int(seconds * 5), "while watched",
                                  strict_first=start.last_progress() + 1)
        self.check_health()
        note(f"  still healthy: progress {vals[0]}..{vals[-1]}")

    # -- death --

    def wait_gone(self, tasks, what, timeout=GONE_TIMEOUT):
        """All tasks dead (zombies allowed) within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [t for t in tasks if task_alive(t)]
            if not alive:
                return
            if time.monotonic() > deadline:
                raise Failure(f"{what}: tasks still running after {timeout:.0f} s: {alive}")
            time.sleep(0.05)

    def wait_vanished(self, tasks, what, timeout=VANISH_TIMEOUT):
        """No /proc entry left for any of the tasks within timeout."""
        self.reap_original()
        deadline = time.monotonic() + timeout
        while True:
            left = [t for t in tasks if task_exists(t)]
            if not left:
                return
            if time.monotonic() > deadline:
                states = {t: (proc_stat(t) or ("gone",))[0] for t in left}
                raise Failure(f"{what}: tasks still exist after {timeout:.0f} s: {states}")
            time.sleep(0.05)

    def kill_tree(self):
        """kill -9 the whole tree, stopping it first so no process sees another die."""
        pids = tree_pids(self.root)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        return pids

    def strays(self):
        """Processes of this workload: the command line names its temp dir, or
        the binary is the workload's (or ckpt's) and the pid was part of the
        tree or a fd points into the temp dir."""
        found = set()
        mark = self.tmp + "/"
        for pid in all_pids():
            if pid == os.getpid():
                continue
            if mark in cmdline(pid):
                found.add(pid)
                continue
            if read_link(f"/proc/{pid}/exe") not in (self.binary, self.env.ckpt_path):
                continue
            if pid in self.seen:
                found.add(pid)
                continue
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            if any(mark in (read_link(f"/proc/{pid}/fd/{fd}") or "") for fd in fds):
                found.add(pid)
        return found

    def destroy(self):
        """Kill everything of this workload and remove its files."""
        for _ in range(3):
            victims = self.strays()
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in victims:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            deadline = time.monotonic() + 3
            while any(task_alive(p) for p in victims) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.proc is not None and self.proc.poll() is not None:
                self.proc = None
            if not victims:
                break
        self.remove_ipc_objects()
        # Files a workload made in /dev/shm (wl_shmfile) carry its root pid.
        for name in os.listdir("/dev/shm"):
            if name.startswith("ckpt-wl-") and self.root and name.endswith(f"-{self.root}"):
                try:
                    os.unlink(os.path.join("/dev/shm", name))
                except OSError:
                    pass
        if self.env.keep:
            note(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def remove_ipc_objects(self):
        """SysV objects a workload made in the host's IPC namespace outlive
        it (wl_sysv logs their key as `ipc-key 0x...`): remove them."""
        for line in self.log().lines:
            if line.startswith("ipc-key "):
                key = line.split()[1]
                for flag in ("-M", "-S", "-Q"):
                    subprocess.run(["ipcrm", flag, key], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=False)


# ---------------------------------------------------------------------------
# Scenario building blocks
# ---------------------------------------------------------------------------

class Env:
    def __init__(self, args):
        self.ckpt_path = os.path.realpath(args.ckpt)
        self.workloads_dir = args.workloads
        self.iters = args.iters
        self.keep = args.keep
        self.workload_override = args.workload
        self.ckpt = Ckpt(self.ckpt_path)
        self.workloads = []
        self.cleanups = []  # called last in cleanup(), newest first
        self.cleaned = False

    def start(self, name, spawn=None, args=()):
        wl = Workload(self, self.workload_override or name, args)
        self.workloads.append(wl)
        return wl.start(spawn=spawn)

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        signal.alarm(0)
        for p in list(self.ckpt.running):
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
        for wl in self.workloads:
            try:
                wl.destroy()
            except Exception as e:  # keep cleaning the others
                note(f"cleanup of {wl.tmp}: {e}")
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:
                note(f"cleanup: {e}")


def require_dump_ok(res, imgdir, what):
    if res.rc != 0:
        res.show()
        raise Failure(f"{what}: ckpt dump exited {res.rc}: {res.error_line()}")
    if not os.path.exists(os.path.join(imgdir, "inventory.img")):
        raise Failure(f"{what}: ckpt dump exited 0 but {imgdir}/inventory.img is missing")


def require_restore_ok(res, wl, what):
    if res.rc != 0:
        res.show()
        raise Failure(f"{what}: ckpt restore exited {res.rc}: {res.error_line()}")
    text = read_text(res.pidfile)
    if wl.pidns and text and text.strip().isdigit():
        # A new pid namespace: the root is 1 inside, anything on the host.
        wl.root = int(text)
        if inner_ids(f"/proc/{wl.root}/status")[0] != 1:
            raise Failure(f"{what}: restored root {wl.root} is not pid 1 in its namespace")
        wl.seen.add(wl.root)
    if text is None or text.strip() != str(wl.root):
        raise Failure(f"{what}: pidfile {res.pidfile} holds {text!r}, expected {wl.root}")
    if not task_alive(wl.root):
        raise Failure(f"{what}: restore exited 0 but pid {wl.root} is not running")


def dump_and_check_gone(env, wl, label):
    """Dump (killing the tree); returns (snapshot, stable, transient, imgdir, tasks)."""
    before, stable, transient = wl.sample()
    tasks = wl.tasks() if wl.pidns else snapshot_tasks(before)
    img = wl.new_dir(label)
    res = env.ckpt.dump(wl, img)
    require_dump_ok(res, img, f"{label}: dump")
    wl.reap_original()
    wl.wait_gone(tasks, f"{label}: after dump")
    return before, stable, transient, img, tasks


# The restore stubs a workload's tree gets (restore/stubs.h): the
# freestanding program for plain trees, copies of ckpt where a stub must run
# ckpt's own code (epoll watches, terminals). Read from the restore's -v log.
STUBS = {
    "tree": "freestanding", "pipes": "freestanding", "zombie": "freestanding",
    "files": "freestanding", "unix": "freestanding",
    "evfds": "copies of ckpt", "pty": "copies of ckpt", "memory": "copies of ckpt",
}


def check_stubs(wl, res, what):
    if not wl.expect_stubs or not res.log_path:
        return
    m = re.search(r"restore stubs: (freestanding|copies of ckpt)[^\n]*", read_text(res.log_path, ""))
    if not m:
        raise Failure(f"{what}: the restore's log does not say which stubs it used")
    if m.group(1) != wl.expect_stubs:
        raise Failure(f"{what}: the restore used {m.group(0)!r}, expected {wl.expect_stubs}")
    note(f"  {m.group(0)}")


def restore_and_check(env, wl, img, before, stable, transient, label, first, extra=()):
    """Restore, compare /proc with before, check the log resumes at `first`
    (an int for exactly, a (lo, hi) pair for a range)."""
    offset = wl.log().end
    res = env.ckpt.restore(wl, img, extra=extra)
    require_restore_ok(res, wl, f"{label}: restore")
    check_stubs(wl, res, f"{label}: restore")
    wl.compare(before, stable, transient, f"{label}: after restore")
    if isinstance(first, tuple):
        vals = wl.wait_progress(offset, PROGRESS_STEP, f"{label}: after restore",
                                first_range=first)
    else:
        vals = wl.wait_progress(offset, PROGRESS_STEP, f"{label}: after restore",
                                strict_first=first)
    wl.check_health()
    note(f"  resumed: progress {vals[0]}..{vals[-1]}, no FAIL")


def cycle(env, wl, label):
    """dump (kill) -> gone -> restore -> same /proc -> log continues exactly."""
    before, stable, transient, img, _ = dump_and_check_gone(env, wl, label)
    last = wl.log().last_progress()
    restore_and_check(env, wl, img, before, stable, transient, label, last + 1)


def leave_running_cycle(env, wl, label, wait_vanish):
    """dump --leave-running -> original unharmed -> kill -9 -> restore."""
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    p_before = wl.log().last_progress()
    img = wl.new_dir(label)
    res = env.ckpt.dump(wl, img, leave_running=True)
    require_dump_ok(res, img, f"{label}: dump --leave-running")
    after_dump = wl.log()
    wl.compare(before, stable, transient, f"{label}: original after --leave-running")
    wl.wait_progress(after_dump.end, PROGRESS_STEP, f"{label}: original after dump",
                     strict_first=after_dump.last_progress() + 1)
    wl.check_health()

    note(f"  kill -9 of the original tree ({len(tasks)} tasks)")
    wl.kill_tree()
    wl.reap_original()
    wl.wait_gone(tasks, f"{label}: after kill -9")
    if wait_vanish:
        wl.wait_vanished(tasks, f"{label}: after kill -9")
    restore_and_check(env, wl, img, before, stable, transient, label,
                      (p_before + 1, after_dump.last_progress() + 1))


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

def sc_workload(env, name):
    wl = env.start(name)
    wl.expect_stubs = STUBS.get(wl.name)
    for i in range(env.iters):
        cycle(env, wl, f"iter{i + 1}")
    wl.watch()


def sc_pidns(env):
    """wl_tree as the init of a pid namespace of its own: restored into a new
    one, with the same pids inside (the root is 1 again) and other host pids."""
    wl = Workload(env, env.workload_override or "tree")
    env.workloads.append(wl)
    wl.pidns = True
    wl.expect_stubs = STUBS.get(wl.name)
    wl.start(prefix=("unshare", "--pid", "--fork", "setsid"))
    for i in range(env.iters):
        cycle(env, wl, f"iter{i + 1}")
    wl.watch()


def sc_freeze_cgroup(env):
    """dump -t ROOT --freeze-cgroup DIR: the tree is frozen through its
    cgroup while it is seized; with --leave-running it carries on and the
    cgroup ends thawed. A process in the cgroup outside the tree stops the
    dump, naming it, and leaves everything running and thawed."""
    base = "/sys/fs/cgroup/unified"
    if not os.path.exists(os.path.join(base, "cgroup.freeze")) and \
            not os.path.exists(os.path.join(base, "cgroup.procs")):
        raise Skip("no cgroup v2 hierarchy at /sys/fs/cgroup/unified")
    own = [l.split(":", 2)[2] for l in (read_text("/proc/self/cgroup") or "").splitlines()
           if l.startswith("0::")]
    parent = os.path.join(base, own[0].lstrip("/")) if own else base
    cg = os.path.join(parent, f"ckpt-e2e-freeze-{os.getpid()}")
    os.mkdir(cg)
    stray = None
    try:
        wl = env.start("tree")
        for pid in tree_pids(wl.root):
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        img = wl.new_dir("freeze")
        before, stable, transient = wl.sample()
        res = env.ckpt.dump(wl, img, leave_running=True, extra=["--freeze-cgroup", cg])
        require_dump_ok(res, img, "dump --freeze-cgroup")
        if "frozen 1" in (read_text(os.path.join(cg, "cgroup.events")) or ""):
            raise Failure("the cgroup is still frozen after the dump")
        wl.compare(before, stable, transient, "after dump --freeze-cgroup --leave-running")
        after = wl.log()
        wl.wait_progress(after.end, PROGRESS_STEP, "after dump --freeze-cgroup",
                         strict_first=after.last_progress() + 1)
        stray = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(stray.pid))
        res = env.ckpt.dump(wl, wl.new_dir("stray"), extra=["--freeze-cgroup", cg])
        if res.rc == 0 or str(stray.pid) not in res.stderr:
            raise Failure(f"dump with pid {stray.pid} in the cgroup: exit {res.rc}, "
                          f"{res.error_line()!r}")
        if "frozen 1" in (read_text(os.path.join(cg, "cgroup.events")) or ""):
            raise Failure("the cgroup is still frozen after the refused dump")
        after = wl.log()
        wl.wait_progress(after.end, PROGRESS_STEP, "after the refused dump",
                         strict_first=after.last_progress() + 1)
        note(f"  refused: {res.error_line()}; the tree runs on, thawed")
    finally:
        if stray:
            stray.kill()
            stray.wait()
        for w in env.workloads:
            w.destroy()
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(cg)
                break
            except OSError:
                if time.monotonic() > deadline:
                    note(f"could not remove {cg}")
                    break
                time.sleep(0.1)


def sc_leave_running(env):
    """dump --leave-running of counter: it keeps running; then killed and restored."""
    wl = env.start("counter")
    for i in range(env.iters):
        leave_running_cycle(env, wl, f"iter{i + 1}", wait_vanish=False)
    wl.watch()


def sc_repeat(env):
    """tree dumped and restored 3 times in a row (restored trees dumped again)."""
    wl = env.start("tree")
    for i in range(max(3, env.iters)):
        cycle(env, wl, f"round{i + 1}")
    wl.watch()


def sc_restore_after_kill(env):
    """dump --leave-running of tree, kill -9, wait for the pids to vanish, restore."""
    wl = env.start("tree")
    for i in range(env.iters):
        leave_running_cycle(env, wl, f"iter{i + 1}", wait_vanish=True)
    wl.watch()


def sc_fault_dump(env):
    """Every dump fault: dump fails, the tree runs on unharmed, no inventory."""
    wl = env.start("tree")
    for fault in DUMP_FAULTS:
        before, stable, transient = wl.sample()
        tasks = snapshot_tasks(before)
        log = wl.log()
        img = wl.new_dir(fault)
        res = env.ckpt.dump(wl, img, fault=fault)
        if res.rc == 0:
            raise Failure(f"{fault}: dump succeeded despite CKPT_FAULT={fault}")
        if res.rc != 1:
            res.show()
            raise Failure(f"{fault}: dump exited {res.rc}, expected 1")
        if os.path.exists(os.path.join(img, "inventory.img")):
            raise Failure(f"{fault}: failed dump left {img}/inventory.img")
        check_unharmed(wl, before, stable, transient, tasks, log, fault)
    # The tree must still be dumpable after all that.
    cycle(env, wl, "clean")
    wl.watch()


def check_unharmed(wl, before, stable, transient, tasks, log, what):
    """After a failed dump: every task runs (not stopped), /proc is as before,
    and the log carries on exactly."""
    deadline = time.monotonic() + 3
    while True:
        bad = {t: (proc_stat(t) or ("gone",))[0] for t in tasks}
        bad = {t: s for t, s in bad.items() if s in ("T", "t", "Z", "X", "gone")}
        if not bad:
            break
        if time.monotonic() > deadline:
            raise Failure(f"{what}: tasks not running after the failed dump: {bad}")
        time.sleep(0.05)
    wl.compare(before, stable, transient, f"{what}: after failed dump")
    vals = wl.wait_progress(log.end, PROGRESS_STEP, f"{what}: after failed dump",
                            strict_first=log.last_progress() + 1)
    wl.check_health()
    note(f"  {what}: tree unharmed, progress {vals[0]}..{vals[-1]}")


def sc_compress(env):
    """dump --compress (zstd page chunks) of memory, restore, carries on."""
    wl = env.start("memory")
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    img = wl.new_dir("compressed")
    res = env.ckpt.dump(wl, img, extra=["--compress=3"])
    require_dump_ok(res, img, "dump --compress")
    wl.reap_original()
    wl.wait_gone(tasks, "after dump --compress")
    last = wl.log().last_progress()
    restore_and_check(env, wl, img, before, stable, transient, "compressed", last + 1)
    wl.watch()


def sc_lazy_pages(env):
    """restore --lazy-pages: the tree runs before its private memory is in;
    faults are served from the images and the rest is filled behind. The
    memory workload (private, file-backed copy-on-write, shared and sparse
    memory, a forked child) carries on exactly, and ckpt exits once every
    page is in."""
    wl = env.start("memory")
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    img = wl.new_dir("lazy")
    res = env.ckpt.dump(wl, img)
    require_dump_ok(res, img, "dump")
    wl.reap_original()
    wl.wait_gone(tasks, "after the dump")
    last = wl.log().last_progress()
    restore_and_check(env, wl, img, before, stable, transient, "lazy", last + 1,
                      extra=["--lazy-pages"])
    wl.watch()
    lazy_restore_killed(env, wl)


def lazy_restore_killed(env, wl):
    """ckpt killed while a lazy restore is still filling 512 MiB: the tree is
    killed with it (by the guard), never left running on zeros; if every
    page was in first, it runs and verifies all of them."""
    hog = os.path.join(env.workloads_dir, "wl_memhog")
    log = os.path.join(wl.tmp, "hog.log")
    p = subprocess.Popen([hog, "--log", log, "--mib", "512"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    env.cleanups.append(lambda: (p.poll() is None and p.kill()))
    wait_for("wl_memhog ready", lambda: "ready" in (read_text(log, "") or ""), READY_TIMEOUT)
    img = wl.new_dir("hog")
    run_cmd([env.ckpt_path, "dump", "-t", str(p.pid), "-D", img], "dump of wl_memhog")
    p.wait()
    wait_for(f"pid {p.pid} to be free", lambda: not os.path.exists(f"/proc/{p.pid}"), 10)
    r = subprocess.Popen([env.ckpt_path, "restore", "--lazy-pages", "-d", "-D", img],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    line = r.stdout.readline()
    m = re.search(r"root pid (\d+)", line)
    if not m:
        r.kill()
        raise Failure(f"restore --lazy-pages printed {line!r}")
    pid = int(m[1])
    time.sleep(0.02)
    r.kill()
    r.wait()
    time.sleep(0.5)
    state = (read_text(f"/proc/{pid}/stat", "") or "").split()
    if state and state[2] != "Z":
        env.cleanups.append(lambda: os.kill(pid, signal.SIGKILL))
        os.kill(pid, signal.SIGUSR1)
        wait_for("wl_memhog to verify its memory",
                 lambda: re.search(r"verified ok|FAIL", read_text(log, "") or ""), 60)
        if "FAIL" in read_text(log, ""):
            raise Failure("ckpt killed during a lazy restore left the tree running on "
                          "missing pages: " + read_text(log, "").strip().splitlines()[-1])
        note("  ckpt killed after the lazy fill ended: the tree runs, its memory verified")
        os.kill(pid, signal.SIGKILL)
    else:
        note("  ckpt killed during the lazy fill: the tree was killed with it")


def sc_disk_full(env):
    """A dump into a full file system fails, leaves no files and the tree runs."""
    wl = env.start("tree")
    mnt = wl.new_dir("small-fs")
    os.makedirs(mnt, exist_ok=True)
    # Room for the small images but not for the page data of six processes.
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "ckpt-e2e", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        before, stable, transient = wl.sample()
        tasks = snapshot_tasks(before)
        log = wl.log()
        img = os.path.join(mnt, "images")
        res = env.ckpt.dump(wl, img, verbose=False)
        if res.rc == 0:
            raise Failure("dump into a 256 KiB file system succeeded")
        if "No space left" not in res.error_line():
            res.show()
            raise Failure(f"dump into a full file system said: {res.error_line()}")
        left = os.listdir(img) if os.path.isdir(img) else []
        if left:
            raise Failure(f"failed dump left files behind: {sorted(left)[:5]}")
        check_unharmed(wl, before, stable, transient, tasks, log, "disk full")
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    cycle(env, wl, "after-disk-full")
    wl.watch()


def sc_interrupt(env):
    """SIGINT (Ctrl-C) to a running dump: it stops, the tree carries on."""
    wl = env.start("memory")
    interrupted = 0
    # -vv makes the dump slow enough to be caught in the middle; a dump that
    # still finished first is retried with a shorter delay (--leave-running,
    # so a finished one harms nothing).
    for delay in (0.3, 0.15, 0.08, 0.04, 0.02, 0.01, 0.005):
        before, stable, transient = wl.sample()
        tasks = snapshot_tasks(before)
        log = wl.log()
        img = wl.new_dir(f"interrupt-{delay}")
        cmd = [env.ckpt_path, "dump", "-t", str(wl.root), "-D", img, "--leave-running", "-vv",
               "--log-file", os.path.join(wl.tmp, f"interrupt-{delay}.log")]
        note(" ".join(cmd) + f"  (SIGINT after {delay} s)")
        with open(os.path.join(wl.tmp, f"interrupt-{delay}.err"), "w+") as err:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=err)
            time.sleep(delay)
            p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=CKPT_TIMEOUT)
            err.seek(0)
            msg = err.read().strip()
        if rc == 0:
            note("  the dump finished before the signal; retrying sooner")
            continue
        if rc != 1 or "interrupted by signal" not in msg:
            raise Failure(f"interrupted dump exited {rc}: {msg[-200:]}")
        if os.path.exists(os.path.join(img, "inventory.img")):
            raise Failure("interrupted dump left an inventory.img")
        check_unharmed(wl, before, stable, transient, tasks, log, f"SIGINT after {delay} s")
        interrupted += 1
        if interrupted >= 2:
            break
    if not interrupted:
        raise Failure("no dump could be interrupted (each finished within 5 ms)")
    wl.watch()


def sc_cli(env):
    """The CLI's contract: help, version, usage errors (exit 2), clear errors
    (exit 1, one line), check, and show printing valid JSON for every image."""
    import json

    def run(args, want_rc, want_text=None, stream="stderr", one_line=True):
        note("ckpt " + " ".join(args))
        r = subprocess.run([env.ckpt_path] + args, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=CKPT_TIMEOUT)
        out = r.stderr if stream == "stderr" else r.stdout
        if r.returncode != want_rc:
            raise Failure(f"ckpt {' '.join(args)}: exit {r.returncode}, expected {want_rc}: "
                          f"{(r.stderr or r.stdout).strip()[-300:]}")
        if want_text and want_text not in out:
            raise Failure(f"ckpt {' '.join(args)}: {stream} lacks {want_text!r}: {out[-300:]!r}")
        if one_line and stream == "stderr" and want_rc != 0 and len(out.strip().splitlines()) != 1:
            raise Failure(f"ckpt {' '.join(args)}: expected one error line, got {out!r}")
        return r

    run(["--version"], 0, "ckpt ", "stdout")
    run(["help"], 0, "commands:", "stdout")
    for verb in ("dump", "restore", "show", "check", "run", "ps", "kill", "rm"):
        run(["help", verb], 0, f"usage: ckpt {verb}", "stdout")
        run([verb, "--help"], 0, f"usage: ckpt {verb}", "stdout")
    run([], 2, "usage: ckpt", one_line=False)
    run(["frobnicate"], 2, "unknown command")
    run(["dump", "-D", "/tmp/x"], 2, "tree")
    run(["dump", "-t", "1", "-D", "/tmp/x", "--no-such-flag"], 2, "no-such-flag")
    run(["dump", "-t", "abc", "-D", "/tmp/x"], 2)
    run(["restore"], 2, "images-dir")
    # A pid that does not exist: pid_max is at most 4194304.
    run(["dump", "-t", "4194305", "-D", "/tmp/ckpt-e2e-nonexistent-pid"], 1,
        "no such process")
    run(["restore", "-D", "/nonexistent-ckpt-dir"], 1, "/nonexistent-ckpt-dir")
    r = run(["check"], 0, "PAGEMAP_SCAN", "stdout")

    wl = env.start("pipes")
    img = wl.new_dir("show")
    res = env.ckpt.dump(wl, img, leave_running=True)
    require_dump_ok(res, img, "dump --leave-running")
    if not re.match(r"dumped \d+ tasks, \d+ threads, \d+ vmas, \d+ pages .* frozen ",
                    res.stdout.strip()):
        raise Failure(f"dump summary line not as documented: {res.stdout.strip()!r}")
    r = run(["show", "-D", img], 0, stream="stdout")
    try:
        doc = json.loads(r.stdout)
    except ValueError as e:
        raise Failure(f"ckpt show printed invalid JSON: {e}")
    for key in ("inventory.img", "pstree.img", "files.img", f"core-{wl.root}.img",
                f"mm-{wl.root}.img", f"pagemap-{wl.root}.img"):
        if key not in doc:
            raise Failure(f"ckpt show lacks {key}: {sorted(doc)[:10]}")
    if doc["inventory.img"].get("root_pid") != wl.root:
        raise Failure(f"inventory root_pid {doc['inventory.img'].get('root_pid')} != {wl.root}")
    pids = sorted(e["pid"] for e in doc["pstree.img"])
    if pids != sorted(snapshot_tasks(wl.sample()[0])):
        raise Failure(f"pstree.img pids {pids} differ from the live tree")
    r = run(["show", "-D", img, f"core-{wl.root}.img"], 0, stream="stdout")
    core = json.loads(r.stdout)
    if core.get("pid") != wl.root or not core.get("threads"):
        raise Failure(f"core image JSON unexpected: {r.stdout[:200]}")
    run(["show", "-D", img, "no-such.img"], 1, "no-such.img")
    wl.watch()

    # restore without -d waits for the root and exits with its status.
    wl2 = env.start("counter")
    before, stable, transient, img2, tasks = dump_and_check_gone(env, wl2, "attached")
    log = wl2.log()
    cmd = [env.ckpt_path, "restore", "-D", img2]
    note(" ".join(cmd) + "  (attached)")
    with open(os.path.join(wl2.tmp, "attached.err"), "w+") as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err)
        env.ckpt.running.append(p)
        try:
            # The old pid may still be a zombie for a moment; the summary
            # line says when the restored tree runs.
            deadline = time.monotonic() + CKPT_TIMEOUT
            while "restored " not in (read_text(err.name, "") or ""):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise Failure(f"attached restore did not start the tree (exit {p.poll()}): "
                                  f"{(read_text(err.name, '') or '').strip()[-200:]}")
                time.sleep(0.05)
            wl2.wait_progress(log.end, PROGRESS_STEP, "attached restore",
                              strict_first=log.last_progress() + 1)
            if p.poll() is not None:
                raise Failure(f"ckpt restore (attached) exited {p.returncode} while the tree runs")
            os.kill(wl2.root, signal.SIGTERM)
            rc = p.wait(timeout=CKPT_TIMEOUT)
        finally:
            env.ckpt.running.remove(p)
        err.seek(0)
        msg = err.read()
    if rc != 128 + signal.SIGTERM:
        raise Failure(f"attached restore exited {rc} after SIGTERM to the root, expected 143: "
                      f"{msg.strip()[-200:]}")
    if "restored " not in msg:
        raise Failure(f"attached restore printed no summary on stderr: {msg!r}")
    note("  attached restore exited 143 when its root got SIGTERM")


def sc_fault_restore(env):
    """Every restore fault: restore fails and leaves no task; then a clean restore works."""
    wl = env.start("tree")
    before, stable, transient, img, tasks = dump_and_check_gone(env, wl, "dump")
    log = wl.log()
    for fault in RESTORE_FAULTS:
        res = env.ckpt.restore(wl, img, fault=fault)
        if res.rc == 0:
            raise Failure(f"{fault}: restore succeeded despite CKPT_FAULT={fault}")
        if res.rc != 1:
            res.show()
            raise Failure(f"{fault}: restore exited {res.rc}, expected 1")
        wl.wait_gone(tasks, f"{fault}: after failed restore")
        wl.wait_vanished(tasks, f"{fault}: after failed restore", timeout=GONE_TIMEOUT)
        strays = wl.strays()
        if strays:
            raise Failure(f"{fault}: processes left behind: "
                          + ", ".join(f"{p} ({cmdline(p)[:60]})" for p in sorted(strays)))
        now = wl.log()
        if now.end != log.end:
            raise Failure(f"{fault}: restored tasks ran before the failure: "
                          f"{now.lines[len(log.lines):][:3]}")
        note(f"  {fault}: failed cleanly ({res.error_line()})")
    restore_and_check(env, wl, img, before, stable, transient, "final",
                      log.last_progress() + 1)
    wl.watch()


def pick_target_image(imgdir, root):
    """A record image that every dump has: the root's core image if named so."""
    names = sorted(n for n in os.listdir(imgdir) if n.endswith(".img") and n != "inventory.img")
    if not names:
        raise Failure(f"no images besides inventory.img in {imgdir}")
    for pred in (lambda n: "core" in n and str(root) in n, lambda n: "core" in n,
                 lambda n: "pstree" in n):
        hits = [n for n in names if pred(n)]
        if hits:
            return hits[0]
    return max(names, key=lambda n: os.path.getsize(os.path.join(imgdir, n)))


def corrupt_truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def corrupt_flip(path):
    with open(path, "r+b") as f:
        off = os.path.getsize(path) // 2
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))


def corrupt_magic(path):
    with open(path, "r+b") as f:
        head = f.read(4)
        f.seek(0)
        f.write(bytes(x ^ 0x5A for x in head))


def sc_bad_images(env):
    """Corrupted images: restore exits 1 with one line naming the image, fast, no process."""
    wl = env.start("counter")
    before, stable, transient, img, tasks = dump_and_check_gone(env, wl, "dump")
    wl.wait_vanished(tasks, "after dump")
    log = wl.log()
    target = pick_target_image(img, wl.root)
    note(f"  images: {sorted(os.listdir(img))}; corrupting {target}")
    cases = [("truncate", target, corrupt_truncate), ("flip-byte", target, corrupt_flip),
             ("bad-magic", target, corrupt_magic),
             ("no-inventory", "inventory.img", os.unlink)]
    for kind, name, corrupt in cases:
        bad = f"{img}-{kind}"
        shutil.copytree(img, bad)
        corrupt(os.path.join(bad, name))
        what = f"{kind} {name}"
        res = env.ckpt.restore(wl, bad, timeout=BAD_IMAGE_TIMEOUT, verbose=False)
        if res.rc != 1:
            res.show()
            raise Failure(f"{what}: restore exited {res.rc}, expected 1")
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        if len(lines) != 1:
            raise Failure(f"{what}: expected one line on stderr, got {len(lines)}: {lines[:3]}")
        stem = name[:-4] if name.endswith(".img") else name
        if name not in lines[0] and stem not in lines[0]:
            raise Failure(f"{what}: error does not name the image: {lines[0]}")
        alive = [t for t in tasks if task_alive(t)]
        if alive or wl.strays():
            raise Failure(f"{what}: restore created processes: {alive or sorted(wl.strays())}")
        if wl.log().end != log.end:
            raise Failure(f"{what}: a restored task ran")
        shutil.rmtree(bad, ignore_errors=True)
        note(f"  {what}: rejected: {lines[0]}")
    restore_and_check(env, wl, img, before, stable, transient, "pristine",
                      log.last_progress() + 1)
    wl.watch()


# ---------------------------------------------------------------------------
# TCP and UDP: a server in the tree (host network namespace), its clients in
# a network namespace of their own joined by a veth pair
# ---------------------------------------------------------------------------

TCP_FLAG = ["--tcp-established"]


def run_cmd(args, what, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise Failure(f"{what}: {' '.join(args)}: {r.stderr.strip() or r.returncode}")
    return r


class TcpNet:
    """Network namespace tcp-N-c for the clients, a veth pair to the host
    (tcpNh / tcpNc), IPv4 10.231.X.0/24 and IPv6 fd00:231:X::/64; removed
    (with any network lock table a failed test left) in env.cleanup."""

    def __init__(self, env):
        tag = os.getpid() % 100000
        x = tag % 250 + 1
        self.env = env
        self.ns = f"tcp-{tag}-c"
        self.host_if, self.peer_if = f"tcp{tag}h", f"tcp{tag}c"
        self.v4, self.v4c = f"10.231.{x}.1", f"10.231.{x}.2"
        self.v6, self.v6c = f"fd00:231:{x:x}::1", f"fd00:231:{x:x}::2"
        self.tables = set()
        self.up_done = False

    def up(self):
        self.env.cleanups.append(self.down)
        if not shutil.which("ip") or not shutil.which("nft"):
            raise Skip("needs ip (iproute2) and nft (nftables)")
        self.down(quiet=True)
        self.up_done = True
        ns, h, c = self.ns, self.host_if, self.peer_if
        for cmd in (["ip", "netns", "add", ns],
                    ["ip", "link", "add", h, "type", "veth", "peer", "name", c, "netns", ns],
                    ["ip", "addr", "add", f"{self.v4}/24", "dev", h],
                    ["ip", "-6", "addr", "add", f"{self.v6}/64", "dev", h, "nodad"],
                    ["ip", "link", "set", h, "up"],
                    ["ip", "-n", ns, "addr", "add", f"{self.v4c}/24", "dev", c],
                    ["ip", "-n", ns, "-6", "addr", "add", f"{self.v6c}/64", "dev", c, "nodad"],
                    ["ip", "-n", ns, "link", "set", c, "up"],
                    ["ip", "-n", ns, "link", "set", "lo", "up"]):
            run_cmd(cmd, "network setup")
        note(f"network: netns {ns}, veth {h} {self.v4} {self.v6} <-> {c} {self.v4c} {self.v6c}")

    def down(self, quiet=False):
        if not self.up_done and not quiet:
            return
        run_cmd(["ip", "netns", "del", self.ns], "netns del", check=False)
        run_cmd(["ip", "link", "del", self.host_if], "link del", check=False)
        for t in self.tables:
            run_cmd(["nft", "delete", "table", "inet", t], "nft", check=False)

    def lock_exists(self, root):
        self.tables.add(f"ckpt_lock_{root}")
        r = run_cmd(["nft", "list", "table", "inet", f"ckpt_lock_{root}"], "nft", check=False)
        return r.returncode == 0


class Client:
    """tcp_client in the clients' namespace, logging to the workload's tmp
    (so Workload.destroy kills it)."""

    def __init__(self, env, wl, net, label, args):
        self.label = label
        self.log_path = os.path.join(wl.tmp, f"client-{label}.log")
        binary = os.path.join(env.workloads_dir, "tcp_client")
        if not os.access(binary, os.X_OK):
            raise Failure(f"{binary} is missing (build the tcp_client target)")
        cmd = ["ip", "netns", "exec", net.ns, binary, "--log", self.log_path] + list(args)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        note(f"client {label}: pid {self.proc.pid} {' '.join(args)}")

    def lines(self):
        return LogView(self.log_path).lines

    def check(self):
        fails = [l for l in self.lines() if l.startswith("FAIL")]
        if fails:
            raise Failure(f"client {self.label}: {fails[0]}")
        if self.proc.poll() is not None:
            raise Failure(f"client {self.label} exited with {self.proc.returncode} "
                          f"(log: {' | '.join(self.lines()[-3:])})")

    def count(self, key="progress"):
        vals = [int(l.split()[1]) for l in self.lines()
                if l.startswith(key + " ") and l.split()[1].isdigit()]
        return vals[-1] if vals else 0

    def wait(self, what, pred, timeout=PROGRESS_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not pred():
            self.check()
            if time.monotonic() > deadline:
                raise Failure(f"client {self.label}: {what} not within {timeout:.0f} s "
                              f"(log: {' | '.join(self.lines()[-3:])})")
            time.sleep(0.05)
        self.check()

    def wait_more(self, base, step, key="progress", what="echoes"):
        self.wait(f"{step} more {what} after {base}", lambda: self.count(key) >= base + step)
        return self.count(key)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        fails = [l for l in self.lines() if l.startswith("FAIL")]
        if fails:
            raise Failure(f"client {self.label}: {fails[0]}")


def tcp_server(env, net, *specs):
    args = []
    for kind, spec in specs:
        args += [f"--{kind}", spec]
    return env.start("tcpserv", args=args)


def tcp_cycle(env, wl, net, clients, label, before_dump=None, key="progress"):
    """dump --tcp-established (kill) -> 1 s -> restore; the server resumes
    exactly and every client carries on without a reset."""
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    if before_dump:
        before_dump()
    img = wl.new_dir(label)
    res = env.ckpt.dump(wl, img, extra=TCP_FLAG)
    require_dump_ok(res, img, f"{label}: dump")
    at_dump = {c.label: c.count(key) for c in clients}
    wl.reap_original()
    wl.wait_gone(tasks, f"{label}: after dump")
    if not net.lock_exists(wl.root):
        raise Failure(f"{label}: no network lock table ckpt_lock_{wl.root} after the dump")
    # Without the flag the restore refuses before creating anything.
    res = env.ckpt.restore(wl, img)
    if res.rc != 1 or "--tcp-established" not in res.error_line():
        res.show()
        raise Failure(f"{label}: restore without --tcp-established exited {res.rc}: "
                      f"{res.error_line()}")
    if task_alive(wl.root) or not net.lock_exists(wl.root):
        raise Failure(f"{label}: the refused restore created the tree or dropped the lock")
    time.sleep(1)
    for c in clients:
        c.check()
    last = wl.log().last_progress()
    restore_and_check(env, wl, img, before, stable, transient, label, last + 1, extra=TCP_FLAG)
    if net.lock_exists(wl.root):
        raise Failure(f"{label}: network lock ckpt_lock_{wl.root} still there after the restore")
    for c in clients:
        got = c.wait_more(at_dump[c.label], 20, key)
        note(f"  client {c.label}: {at_dump[c.label]} at the dump, {got} now, no reset")
    return img


def tcp_dump_leave_running(env, wl, net):
    """dump --leave-running --tcp-established of wl: it must succeed, leave
    no network lock, and leave the workload unharmed. Returns the images."""
    before, stable, transient = wl.sample()
    log = wl.log()
    img = wl.new_dir("leave-running")
    res = env.ckpt.dump(wl, img, leave_running=True, extra=TCP_FLAG)
    require_dump_ok(res, img, "dump --leave-running")
    if net.lock_exists(wl.root):
        raise Failure(f"network lock ckpt_lock_{wl.root} left after dump --leave-running")
    check_unharmed(wl, before, stable, transient, snapshot_tasks(before), log, "leave-running")
    return img


def sc_tcp(env):
    """IPv4 and IPv6 connections of a server survive dump, 1 s away, restore;
    then a failed dump and a dump --leave-running leave them unharmed."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("listen", f"{net.v4}:7000"), ("listen", f"[{net.v6}]:7001"))
    clients = [Client(env, wl, net, "v4", ["--connect", f"{net.v4}:7000"]),
               Client(env, wl, net, "v6", ["--connect", f"[{net.v6}]:7001"])]
    for c in clients:
        c.wait_more(0, 20)
    for i in range(env.iters):
        tcp_cycle(env, wl, net, clients, f"iter{i + 1}")
    # A dump that fails once the connections are locked and in repair mode
    # gives them back as they were.
    before, stable, transient = wl.sample()
    log = wl.log()
    img = wl.new_dir("fault")
    res = env.ckpt.dump(wl, img, fault="dump-after-pages", extra=TCP_FLAG)
    if res.rc != 1:
        res.show()
        raise Failure(f"dump with CKPT_FAULT=dump-after-pages exited {res.rc}, expected 1")
    if net.lock_exists(wl.root):
        raise Failure(f"network lock ckpt_lock_{wl.root} left after a failed dump")
    check_unharmed(wl, before, stable, transient, snapshot_tasks(before), log, "failed dump")
    for c in clients:
        c.wait_more(c.count(), 20)
    # --leave-running: the connections leave repair mode and are unlocked.
    tcp_dump_leave_running(env, wl, net)
    for c in clients:
        c.wait_more(c.count(), 20)
    wl.watch(3)
    for c in clients:
        c.wait_more(c.count(), 20)
        c.stop()


def show_json(env, img, name):
    import json
    r = run_cmd([env.ckpt_path, "show", "-D", img, name], "ckpt show")
    return json.loads(r.stdout)


def sc_tcp_inflight(env):
    """A burst in both directions at the dump: unread input and unacknowledged
    output in the server's sockets come back; the client sees every echo."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("listen", f"{net.v4}:7000"), ("listen", f"[{net.v6}]:7001"))
    clients = []
    for fam, spec in (("v4", f"{net.v4}:7000"), ("v6", f"[{net.v6}]:7001")):
        burst = os.path.join(wl.tmp, f"burst-{fam}")
        clients.append(Client(env, wl, net, fam, ["--connect", spec, "--burst-file", burst,
                                                   "--burst-bytes", str(8 << 20)]))
    for c in clients:
        c.wait_more(0, 20)

    def burst():
        for c in clients:
            open(os.path.join(wl.tmp, f"burst-{c.label}"), "w").close()
        for c in clients:
            c.wait("burst queued", lambda c=c: "burst queued" in c.lines())
        time.sleep(0.3)  # the clients write for 1.5 s without reading

    img = tcp_cycle(env, wl, net, clients, "inflight", before_dump=burst)
    files = show_json(env, img, "files.img")
    queued = [(d["tcp_sk"].get("repair", {}).get("recv_len", 0),
               d["tcp_sk"].get("repair", {}).get("send_len", 0))
              for d in files if "tcp_sk" in d and "repair" in d["tcp_sk"]
              and d["tcp_sk"].get("src_port") in (7000, 7001)]
    note(f"  client connections at the dump (received unread, sent unacknowledged): {queued}")
    if not any(r > 0 for r, s in queued) or not any(s > 0 for r, s in queued):
        raise Failure(f"inflight: no data in flight both ways at the dump: {queued}")
    for c in clients:
        c.wait("burst done", lambda c=c: "burst done" in c.lines(), timeout=60)
        c.wait_more(c.count(), 20)
    wl.watch(3)
    for c in clients:
        c.stop()


def sc_tcp_listen(env):
    """Listening sockets (IPv4, IPv6) keep address, backlog and options and
    accept new connections after a restore; a connection waiting in an
    accept queue stops a dump without --tcp-established with a clear error
    and the tree carries on (with the flag: tcp-acceptq)."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("listen", f"{net.v4}:7000"), ("listen", f"[{net.v6}]:7001"),
                    ("lazy", f"{net.v4}:7003"))
    tcp_cycle(env, wl, net, [], "listeners")
    r = run_cmd(["ss", "-Hltn", f"sport = :7000 or sport = :7001 or sport = :7003"], "ss")
    note("  listening after restore:\n    " + "\n    ".join(r.stdout.strip().splitlines()))
    for port, backlog in (("7000", "17"), ("7001", "17"), ("7003", "17")):
        if not any(f":{port} " in l and l.split()[2] == backlog for l in r.stdout.splitlines()):
            raise Failure(f"listener on port {port} not back with backlog {backlog}: {r.stdout}")
    clients = [Client(env, wl, net, "v4", ["--connect", f"{net.v4}:7000"]),
               Client(env, wl, net, "v6", ["--connect", f"[{net.v6}]:7001"])]
    for c in clients:
        c.wait_more(0, 20)
    held = Client(env, wl, net, "held", ["--hold", f"{net.v4}:7003"])
    held.wait("connected", lambda: "connected" in held.lines())
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    log = wl.log()
    img = wl.new_dir("queued")
    res = env.ckpt.dump(wl, img)
    if res.rc != 1:
        res.show()
        raise Failure(f"dump with a queued connection exited {res.rc}, expected 1")
    msg = res.error_line()
    note(f"  refused: {msg}")
    if "not accepted" not in msg or f"{net.v4}:7003" not in msg:
        raise Failure(f"the error does not name the listener and its queued connection: {msg}")
    if os.path.exists(os.path.join(img, "inventory.img")):
        raise Failure("failed dump left inventory.img")
    check_unharmed(wl, before, stable, transient, tasks, log, "queued connection")
    if net.lock_exists(wl.root):
        raise Failure(f"failed dump left the network lock ckpt_lock_{wl.root}")
    for c in clients:
        c.wait_more(c.count(), 20)
    held.check()
    for c in clients + [held]:
        c.stop()


def listen_queue(port):
    """Recv-Q of the listener on port (connections waiting to be accepted)."""
    r = run_cmd(["ss", "-Hltn", f"sport = :{port}"], "ss")
    lines = [l.split() for l in r.stdout.splitlines() if l.strip()]
    if len(lines) != 1:
        raise Failure(f"no single listener on port {port}: {r.stdout}")
    return int(lines[0][1])


def sc_tcp_acceptq(env):
    """Connections waiting in accept queues (IPv4, IPv6), each with a message
    of its client unread, survive dump --leave-running (queue intact) and
    dump, kill, restore: once the server accepts, every client gets every
    echo in order, with no reset."""
    net = TcpNet(env)
    net.up()
    ports = (7005, 7006)
    wl = tcp_server(env, net, ("later", f"{net.v4}:{ports[0]}"),
                    ("later", f"[{net.v6}]:{ports[1]}"))
    clients = []
    for fam, spec in (("v4", f"{net.v4}:{ports[0]}"), ("v6", f"[{net.v6}]:{ports[1]}"),
                      ("v4b", f"{net.v4}:{ports[0]}")):
        c = Client(env, wl, net, fam, ["--connect", spec])
        c.wait("connected", lambda c=c: "connected" in c.lines())
        clients.append(c)

    def queues():
        return tuple(listen_queue(p) for p in ports)

    deadline = time.monotonic() + 10
    while queues() != (2, 1):
        if time.monotonic() > deadline:
            raise Failure(f"accept queues are {queues()}, expected (2, 1)")
        time.sleep(0.05)
    time.sleep(0.3)  # each client's first message sits in its connection
    # --leave-running: the queues are taken apart and put back at once.
    img = tcp_dump_leave_running(env, wl, net)
    if queues() != (2, 1):
        raise Failure(f"accept queues after dump --leave-running: {queues()}, expected (2, 1)")
    files = show_json(env, img, "files.img")
    saved = [q for d in files if "tcp_sk" in d for q in d["tcp_sk"].get("queued", [])]
    note(f"  saved queued connections: "
         f"{[(q.get('peer_port'), q.get('repair', {}).get('recv_len', 0)) for q in saved]}")
    if len(saved) != 3 or not all(q.get("repair", {}).get("recv_len", 0) > 0 for q in saved):
        raise Failure(f"the image does not hold 3 queued connections with unread bytes: {saved}")
    # dump (kill), 1 s away, restore: the queues come back.
    tcp_cycle(env, wl, net, [], "acceptq")
    if queues() != (2, 1):
        raise Failure(f"accept queues after the restore: {queues()}, expected (2, 1)")
    for c in clients:
        c.check()
    open(os.path.join(wl.dir, "accept"), "w").close()
    for c in clients:
        got = c.wait_more(0, 20)
        note(f"  client {c.label}: accepted after the restore, {got} echoes, no reset")
    # Each listener's connections are accepted in the order they were queued.
    accepted = [int(l.rsplit(":", 1)[1]) for l in wl.log().lines if l.startswith("accepted ")]
    for d in files:
        order = [int(q.get("peer_port", 0)) for q in d.get("tcp_sk", {}).get("queued", [])]
        if [p for p in accepted if p in order] != order:
            raise Failure(f"accepted in the order {accepted}, queued in the order {order}")
    wl.watch(3)
    for c in clients:
        c.wait_more(c.count(), 20)
        c.stop()


def ss_count(state, port):
    r = run_cmd(["ss", "-Htn", "state", state, f"sport = :{port}"], "ss")
    return len([l for l in r.stdout.splitlines() if l.strip()])


def sc_tcp_halfclosed(env):
    """Half-closed connections: the peer shut down its side (the server is in
    CLOSE_WAIT, IPv4) or the server shut down its own (FIN_WAIT2, IPv6); data
    keeps flowing the open way across dump and restore."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("listen", f"{net.v4}:7000"), ("listen", f"[{net.v6}]:7001"))
    half = Client(env, wl, net, "half", ["--half", f"{net.v4}:7000"])
    shut = Client(env, wl, net, "shut", ["--shut", f"[{net.v6}]:7001"])
    half.wait_more(0, 40)
    shut.wait("server shut", lambda: "server shut" in shut.lines())

    def oneway():
        vals = [int(l.split()[1]) for l in wl.log().lines if l.startswith("oneway ")]
        return vals[-1] if vals else 0

    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while oneway() < 50:
        shut.check()
        if time.monotonic() > deadline:
            raise Failure("the server checks no one-way messages after its shutdown")
        time.sleep(0.05)
    states = {"close-wait :7000": ss_count("close-wait", 7000),
              "fin-wait-2 :7001": ss_count("fin-wait-2", 7001)}
    note(f"  before the dump: {states}")
    if not all(states.values()):
        raise Failure(f"the connections are not half-closed as intended: {states}")
    at_dump = oneway()
    tcp_cycle(env, wl, net, [half, shut], "halfclosed")
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while oneway() < at_dump + 50:
        shut.check()
        if time.monotonic() > deadline:
            raise Failure(f"one-way messages stopped at {oneway()} after the restore "
                          f"({at_dump} at the dump)")
        time.sleep(0.05)
    note(f"  server checked one-way messages: {at_dump} at the dump, {oneway()} now")
    wl.watch(3)
    half.check()
    shut.check()


def sc_udp(env):
    """UDP sockets (bound IPv4 and IPv6 echo sockets, and loopback ones with
    datagrams queued from a known sender) survive dump and restore."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("udp", f"{net.v4}:7002"), ("udp", f"[{net.v6}]:7004"))
    clients = [Client(env, wl, net, "v4", ["--udp", f"{net.v4}:7002"]),
               Client(env, wl, net, "v6", ["--udp", f"[{net.v6}]:7004"])]
    for c in clients:
        c.wait_more(0, 20, "udp", "datagram echoes")
    for i in range(env.iters):
        tcp_cycle(env, wl, net, clients, f"iter{i + 1}", key="udp")
    wl.watch(3)
    for c in clients:
        c.stop()


def sc_tcp_no_flag(env):
    """Without --tcp-established a dump with connections stops, naming them;
    the tree and its connections carry on."""
    net = TcpNet(env)
    net.up()
    wl = tcp_server(env, net, ("listen", f"{net.v4}:7000"), ("listen", f"[{net.v6}]:7001"))
    clients = [Client(env, wl, net, "v4", ["--connect", f"{net.v4}:7000"]),
               Client(env, wl, net, "v6", ["--connect", f"[{net.v6}]:7001"])]
    for c in clients:
        c.wait_more(0, 20)
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    log = wl.log()
    img = wl.new_dir("noflag")
    res = env.ckpt.dump(wl, img)
    if res.rc != 1:
        res.show()
        raise Failure(f"dump without --tcp-established exited {res.rc}, expected 1")
    msg = res.error_line()
    note(f"  refused: {msg}")
    for want in ("--tcp-established", f"{net.v4}:7000 <-> {net.v4c}:", f"[{net.v6}]:7001 <-> "):
        if want not in msg:
            raise Failure(f"the error does not name {want!r}: {msg}")
    if os.path.exists(os.path.join(img, "inventory.img")):
        raise Failure("failed dump left inventory.img")
    check_unharmed(wl, before, stable, transient, tasks, log, "no flag")
    if net.lock_exists(wl.root):
        raise Failure(f"failed dump left the network lock ckpt_lock_{wl.root}")
    for c in clients:
        c.wait_more(c.count(), 20)
        c.stop()


# ---------------------------------------------------------------------------
# Shell jobs: a workload started from a shell on a terminal
# ---------------------------------------------------------------------------

# A small job-control shell: leader of a new session whose controlling
# terminal is its stdin; runs argv[2:] as the foreground job in its own
# process group; reports the job's pid, then its wait status and which group
# had the terminal when it ended.
MINI_SHELL = r"""
import fcntl, os, signal, sys, termios
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
report = open(sys.argv[1], "a", buffering=1)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.tcsetpgrp(0, os.getpid())
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.execv(sys.argv[2], sys.argv[2:])
try:
    os.setpgid(pid, pid)
except OSError:
    pass
os.tcsetpgrp(0, pid)
report.write(f"job {pid}\n")
_, status = os.waitpid(pid, 0)
report.write(f"exit {status} foreground {os.tcgetpgrp(0)}\n")
"""


class Terminal:
    """A pty made by the test: the slave for a session, the master read
    all the time into a buffer (a job writing to a full terminal blocks)."""

    def __init__(self):
        import threading
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self.lock = threading.Lock()
        self.data = bytearray()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            try:
                b = os.read(self.master, 4096)
            except OSError:  # EIO: no slave open any more
                return
            if not b:
                return
            with self.lock:
                self.data += b

    def text(self, start=0):
        with self.lock:
            return bytes(self.data[start:]).decode(errors="replace")

    def size(self):
        with self.lock:
            return len(self.data)

    def foreground(self):
        """The terminal's foreground process group (TIOCGPGRP on the master)."""
        import fcntl
        import struct
        import termios
        return struct.unpack("i", fcntl.ioctl(self.master, termios.TIOCGPGRP, b"\0" * 4))[0]

    def run_in_shell(self, argv, report, cwd):
        """MINI_SHELL on this terminal running argv; returns (shell Popen, job pid)."""
        shell = subprocess.Popen([sys.executable, "-c", MINI_SHELL, report] + argv,
                                 stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                 start_new_session=True, close_fds=True, cwd=cwd)
        job = wait_value(lambda: report_value(report, "job"), READY_TIMEOUT,
                       lambda: f"the shell on {self.name} started no job "
                               f"(exit {shell.poll()}): {self.text()[-300:]!r}")
        return shell, int(job)


def report_value(path, key):
    """The rest of the line of a MINI_SHELL report that starts with key, or None."""
    for line in (read_text(path, "") or "").splitlines():
        if line.startswith(key + " "):
            return line[len(key) + 1:]
    return None


def wait_value(pred, timeout, what):
    """pred()'s first true value within timeout, else Failure(what())."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Failure(what())
        time.sleep(0.05)


def sc_shell_job(env):
    """wl_ttyjob started from a shell on a terminal: a dump without
    --shell-job is refused (naming the task and terminal) and the job runs
    on; dumped with it and restored with it from a shell on another
    terminal, the job writes there, joins that session, is its foreground
    job (typed input reaches it; Ctrl-Z stops it and ckpt; continuing ckpt
    continues it), and the terminal goes back to ckpt's group at the end."""
    term1 = Terminal()
    wl = env.start("ttyjob", spawn=lambda w: term1.run_in_shell(
        [w.binary, "--log", w.log_path, "--dir", w.dir], os.path.join(w.tmp, "shell1.report"),
        w.tmp))
    os.close(term1.slave)
    wait_value(lambda: "tick" in term1.text(), PROGRESS_TIMEOUT,
             lambda: f"wl_ttyjob writes nothing to {term1.name}")

    # Without --shell-job: refused, the job carries on.
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    log = wl.log()
    img = wl.new_dir("no-shell-job")
    res = env.ckpt.dump(wl, img)
    if res.rc != 1:
        res.show()
        raise Failure(f"dump of a shell job without --shell-job exited {res.rc}, expected 1")
    line = res.error_line()
    for want in (f"pid {wl.root}", term1.name, "--shell-job"):
        if want not in line:
            raise Failure(f"dump without --shell-job: error lacks {want!r}: {line}")
    if os.path.exists(os.path.join(img, "inventory.img")):
        raise Failure("the refused dump left an inventory.img")
    check_unharmed(wl, before, stable, transient, tasks, log, "dump without --shell-job")
    note(f"  refused: {line}")

    # With it.
    before, stable, transient = wl.sample()
    tasks = snapshot_tasks(before)
    img = wl.new_dir("shell-job")
    res = env.ckpt.dump(wl, img, extra=["--shell-job"])
    require_dump_ok(res, img, "dump --shell-job")
    wl.reap_original()  # the first shell ends with its job
    wl.wait_gone(tasks, "after dump --shell-job")
    last = wl.log().last_progress()

    res = env.ckpt.restore(wl, img, verbose=False)
    if res.rc != 1 or "--shell-job" not in res.error_line():
        raise Failure(f"restore of a shell job without --shell-job: exit {res.rc}, "
                      f"{res.error_line()}")
    note(f"  restore without --shell-job refused: {res.error_line()}")

    # Restored by ckpt run as the foreground job of a shell on terminal 2.
    term2 = Terminal()
    offset = wl.log().end
    report2 = os.path.join(wl.tmp, "shell2.report")
    argv = [env.ckpt_path, "restore", "-D", img, "--shell-job", "-v", "--log-file",
            os.path.join(wl.tmp, "restore-shell-job.log")]
    note(" ".join(argv) + f"  (on {term2.name})")
    shell2, ckpt_pid = term2.run_in_shell(argv, report2, wl.tmp)
    os.close(term2.slave)
    wait_value(lambda: task_alive(wl.root) and "restored " in term2.text()
             or report_value(report2, "exit"), CKPT_TIMEOUT,
             lambda: f"restore on {term2.name} did not finish: {term2.text()[-300:]!r}")
    if report_value(report2, "exit"):
        raise Failure(f"ckpt restore --shell-job ended ({report_value(report2, 'exit')}): "
                      f"{term2.text().strip()[-300:]}")
    vals = wl.wait_progress(offset, PROGRESS_STEP, "after restore", strict_first=last + 1)
    wl.check_health()
    state, ppid, pgid, sid = proc_stat(wl.root)
    if sid != shell2.pid or ppid != ckpt_pid:
        raise Failure(f"restored job: session {sid}, parent {ppid}; expected the session of the "
                      f"shell on {term2.name} ({shell2.pid}) and ckpt ({ckpt_pid})")
    for fd in (0, 1, 2):
        got = read_link(f"/proc/{wl.root}/fd/{fd}")
        if got != term2.name:
            raise Failure(f"restored job: fd {fd} is {got}, expected {term2.name}")
    if "/dev/tty" not in (read_link(f"/proc/{wl.root}/fd/{fd}")
                          for fd in os.listdir(f"/proc/{wl.root}/fd")):
        raise Failure("restored job: its fd on /dev/tty is missing")
    if term2.foreground() != pgid:
        raise Failure(f"{term2.name}: foreground group {term2.foreground()}, expected the "
                      f"job's {pgid}")
    wait_value(lambda: f"tick {vals[-1]}" in term2.text(), PROGRESS_TIMEOUT,
             lambda: f"the restored job does not write to {term2.name}")
    # It logs changes: a new terminal, and it never saw itself in the background.
    after = wl.log(offset).lines
    if f"tty {term2.name}" not in after or "foreground 0" in after:
        raise Failure(f"restored job's log: {after[:5]}")
    note(f"  job {wl.root} runs in session {sid} on {term2.name}, foreground, "
         f"progress {vals[0]}..{vals[-1]}")

    # Typed input reaches the foreground job.
    os.write(term2.master, b"hello ckpt\n")
    wait_value(lambda: "input hello ckpt" in wl.log(offset).lines and "got hello ckpt"
             in term2.text(), PROGRESS_TIMEOUT, lambda: "typed input did not reach the job")

    # Ctrl-Z: the job stops, ckpt takes the terminal back and stops too;
    # continuing ckpt (the shell's `fg`) continues the job in the foreground.
    os.write(term2.master, b"\x1a")
    wait_value(lambda: (proc_stat(wl.root) or "?")[0] == "T" and
             (proc_stat(ckpt_pid) or "?")[0] == "T", PROGRESS_TIMEOUT,
             lambda: f"Ctrl-Z: job {proc_stat(wl.root)}, ckpt {proc_stat(ckpt_pid)}")
    if term2.foreground() != ckpt_pid:
        raise Failure(f"Ctrl-Z: foreground {term2.foreground()}, expected ckpt's group {ckpt_pid}")
    stopped = wl.log()
    os.kill(ckpt_pid, signal.SIGCONT)
    wl.wait_progress(stopped.end, PROGRESS_STEP, "after fg",
                     strict_first=stopped.last_progress() + 1)
    if term2.foreground() != pgid:
        raise Failure(f"after fg: foreground {term2.foreground()}, expected the job's {pgid}")
    note("  Ctrl-Z stopped job and ckpt; continuing ckpt continued the job in the foreground")

    # The end: ckpt exits with the job's status, its group has the terminal.
    os.kill(wl.root, signal.SIGTERM)
    ended = wait_value(lambda: report_value(report2, "exit"), CKPT_TIMEOUT,
                     lambda: "ckpt restore did not end with the job")
    shell2.wait(timeout=GONE_TIMEOUT)
    status, _, fg = ended.split()
    if int(status) != (128 + signal.SIGTERM) << 8 or int(fg) != ckpt_pid:
        raise Failure(f"ckpt restore ended with wait status {status} (expected exit 143), "
                      f"terminal foreground {fg} (expected ckpt's group {ckpt_pid})")
    note("  ckpt exited 143 with the job and gave the terminal back to its group")


# ---------------------------------------------------------------------------
# Containers: ckpt run / ps / kill / rm on simulated hosts (scripts/hosts)
# ---------------------------------------------------------------------------

HOSTS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                            "scripts", "hosts")


class Containers:
    """ckpt run and friends inside a simulated host, with a state directory
    and cgroup parent of their own; cleanup() removes every container and
    the hosts, also after a failure."""

    def __init__(self, env):
        self.env = env
        # Names of namespaces, containers and cgroups carry "run" and our pid.
        self.prefix = f"run{os.getpid()}-"
        self.tmp = tempfile.mkdtemp(prefix=f"ckpt-e2e-{self.prefix}")
        self.run_dir = os.path.join(self.tmp, "state")
        self.names = []
        self.hosts_up = False

    def ns(self, host):
        return self.prefix + host

    def sh(self, cmd, check=True, timeout=CKPT_TIMEOUT, env_extra=None):
        e = dict(os.environ)
        e.pop("CKPT_FAULT", None)
        e.update(env_extra or {})
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=timeout, env=e)
        if check and r.returncode != 0:
            raise Failure(f"{' '.join(cmd)}: exit {r.returncode}: "
                          f"{(r.stderr or r.stdout).strip()[-300:]}")
        return r

    def hosts(self, verb):
        note(f"HOSTS_PREFIX={self.prefix} scripts/hosts {verb}")
        if verb == "up":
            self.hosts_up = True
        return self.sh(["bash", HOSTS_SCRIPT, verb], env_extra={"HOSTS_PREFIX": self.prefix})

    def ckpt(self, args, host="hostA", check=True):
        """ckpt ARGS in HOST's network namespace (as `ip netns exec` runs it)."""
        cmd = ["ip", "netns", "exec", self.ns(host), self.env.ckpt_path] + args
        note(" ".join(cmd[3:] if host else cmd))
        return self.sh(cmd, check=check, env_extra={
            "CKPT_RUN_DIR": self.run_dir, "CKPT_CGROUP_PARENT": self.prefix + "ckpt"})

    def run(self, name, args, host="hostA"):
        self.names.append(name)
        r = self.ckpt(["run", "-d", "--name", name] + args, host)
        m = re.match(r"^(\S+) (\d+)$", r.stdout.strip())
        if not m or m[1] != name:
            raise Failure(f"ckpt run -d printed {r.stdout.strip()!r}, expected 'NAME PID'")
        return int(m[2])

    def state(self, name):
        text = read_text(os.path.join(self.run_dir, name))
        if text is None:
            raise Failure(f"no state file for {name} in {self.run_dir}")
        return text

    def cgroup_paths(self, name):
        return re.findall(r'^cgroup_paths: "(.*)"$', self.state(name), re.M)

    def ps(self, name):
        """(pid, status) of NAME in `ckpt ps`, or None."""
        out = self.ckpt(["ps"]).stdout.splitlines()
        if not out or not out[0].split()[:5] == ["NAME", "PID", "STATUS", "CREATED", "COMMAND"]:
            raise Failure(f"ckpt ps header unexpected: {out[:1]}")
        for line in out[1:]:
            f = line.split()
            if f and f[0] == name:
                return int(f[1]), f[2]
        return None

    def link_exists(self, host, ifname):
        return self.sh(["ip", "-n", self.ns(host), "link", "show", ifname],
                       check=False).returncode == 0

    def cleanup(self):
        for name in self.names:
            try:
                self.ckpt(["rm", "-f", name], check=False)
            except Exception as e:
                note(f"cleanup of container {name}: {e}")
        if self.hosts_up:
            try:
                self.hosts("down")
            except Exception as e:
                note(f"hosts down: {e}")
        self.sweep_cgroups(self.prefix + "ckpt")
        if self.env.keep:
            note(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def sweep_cgroups(self, parent):
        """Whatever a failure left in the cgroup parent (a container whose
        state file is gone): its processes killed, its directories removed."""
        parents = [d for d in glob.glob(f"/sys/fs/cgroup/**/{parent}", recursive=True)
                   if os.path.isdir(d)]
        dirs = sorted({os.path.join(r, d) for p in parents for r, ds, _ in os.walk(p) for d in ds}
                      | set(parents), key=len, reverse=True)
        for d in dirs:
            for pid in (read_text(os.path.join(d, "cgroup.procs")) or "").split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        for d in dirs:
            deadline = time.monotonic() + 5
            while os.path.isdir(d):
                try:
                    os.rmdir(d)
                except OSError:
                    if time.monotonic() > deadline:
                        note(f"could not remove cgroup {d}")
                        break
                    time.sleep(0.05)


def wait_for(what, cond, timeout=GONE_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise Failure(f"{what} (after {timeout:.0f} s)")
        time.sleep(0.05)


def check_container_removed(c, name, pid, cg_paths, host_if=None, log=None):
    if os.path.exists(os.path.join(c.run_dir, name)):
        raise Failure(f"ckpt rm {name} left its state file")
    left = [p for p in cg_paths if os.path.exists(p)]
    if left:
        raise Failure(f"ckpt rm {name} left its cgroup: {left}")
    if host_if and c.link_exists("hostA", host_if):
        raise Failure(f"ckpt rm {name} left the host veth {host_if}")
    if log and os.path.exists(log):
        raise Failure(f"ckpt rm {name} left its log {log}")
    if c.ps(name) is not None:
        raise Failure(f"ckpt ps still lists {name} after rm")
    wait_for(f"init {pid} of {name} still exists", lambda: not task_alive(pid))


def make_rootfs(tmp, binary):
    """A minimal root: the binary in /bin and the libraries ldd names."""
    root = os.path.join(tmp, "rootfs")
    for d in ("bin", "tmp", "proc", "dev"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy2(binary, os.path.join(root, "bin"))
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    for lib in re.findall(r"(/\S+)", out):
        dst = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(os.path.realpath(lib), dst)
    return root


def container_tree(pid):
    """The tree of a container, with the ids inside its pid namespace and
    without mount ids (a new mount namespace numbers its mounts anew)."""
    snap = ns_view(capture(pid))
    for v in snap.values():
        for f in v["fds"].values():
            f.pop("mnt_id", None)
    return snap


def container_view(c, pid, tmpfs_dir):
    """What a container's processes see, as comparable text: the pid tree
    (ids inside its pid namespace), hostname, links, addresses, routes of
    every table, rules, the nftables ruleset, SysV IPC objects, its mounts
    (ids masked) and a file on its tmpfs."""
    def inside(flags, cmd):
        return c.sh(["nsenter", "-t", str(pid)] + flags + cmd).stdout
    # IPv6 addresses go through duplicate address detection when a link
    # comes up (a new container, a restored one): "tentative" for a second
    # or two. Compare them once it is over.
    deadline = time.monotonic() + 5
    while ("tentative" in inside(["-n"], ["ip", "-o", "addr"])
           and time.monotonic() < deadline):
        time.sleep(0.2)
    snap = container_tree(pid)
    mounts = []
    for line in (read_text(f"/proc/{pid}/mountinfo") or "").splitlines():
        f = line.split()
        sep = f.index("-")
        # Under `ip netns exec` (which remounts /sys) ckpt mounts the cgroup
        # hierarchies again in a private namespace of its own (sys/cgroup);
        # a container restored by another ckpt has that ckpt's instance.
        if f[4].startswith("/sys/fs/cgroup"):
            continue
        mounts.append(" ".join([f[4], f[5], f[sep + 1], f[sep + 2]]))
    return {
        "tree": snap,
        "hostname": inside(["-u"], ["hostname"]),
        # The peer's index and namespace are the host's business (another
        # host after a move).
        "links": re.sub(r" link-netns \S+", "", re.sub(r"@if\d+", "@ifN",
                                                     inside(["-n"], ["ip", "-o", "link"]))),
        "addr": inside(["-n"], ["ip", "-o", "addr"]),
        "routes": inside(["-n"], ["ip", "route", "show", "table", "all"]),
        "rules": inside(["-n"], ["ip", "rule"]),
        "nft": inside(["-n"], ["nft", "list", "ruleset"]),
        "ipc": inside(["-i"], ["ipcs"]),
        "mounts": mounts,
        "tmpfs": read_text(f"/proc/{pid}/root{tmpfs_dir}/data.txt"),
    }


def diff_views(a, b):
    out = []
    for k in a:
        if k == "tree":
            out += diff_snapshots(a[k], b[k], 1)
        elif a[k] != b[k]:
            out.append(f"{k}: {a[k]!r} -> {b[k]!r}")
    return out


def sc_container(env):
    """A container started with ckpt run (a pid-namespace tree, hostname,
    bridged veth, a second routing table and a rule, an nftables rule, SysV
    IPC objects, a tmpfs with a file) is dumped with --container and
    restored on the same simulated host, then dumped again and restored on
    the other one (--net bridge=br0 there); every time what it sees inside
    is the same, its log carries on, and the client reaches its address."""
    for tool in ("ip", "ping", "nsenter", "nft", "ipcs", "ipcmk"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps)")
    binary = os.path.realpath(os.path.join(env.workloads_dir, "wl_tree"))
    c = Containers(env)
    try:
        c.hosts("up")
        name = c.prefix + "ct"
        log = os.path.join(c.tmp, "ct.log")
        wdir = os.path.join(c.tmp, "wdir")
        os.mkdir(wdir)
        pid = c.run(name, ["--hostname", "ct1", "--memory", "256M",
                           "--net", "bridge=br0,ip=10.77.0.11/24,gw=10.77.0.1",
                           "--", binary, "--log", log, "--dir", wdir])
        wait_for("the containerized wl_tree did not log 'ready'",
                 lambda: LogView(log).ready, READY_TIMEOUT)
        tmpfs_dir = "/run/ct-data"
        for flags, cmd in (
                (["-n"], ["ip", "route", "add", "10.99.0.0/24", "via", "10.77.0.1",
                          "table", "100"]),
                (["-n"], ["ip", "rule", "add", "from", "10.77.0.11", "lookup", "100",
                          "priority", "1000"]),
                (["-n"], ["nft", "add table inet ctfw; add chain inet ctfw in "
                          "{ type filter hook input priority 0; }; "
                          "add rule inet ctfw in tcp dport 9999 drop"]),
                (["-i"], ["ipcmk", "-M", "65536"]),
                (["-i"], ["ipcmk", "-Q"]),
                (["-i"], ["ipcmk", "-S", "3"]),
                (["-m"], ["mkdir", "-p", tmpfs_dir]),
                (["-m"], ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "ctdata",
                          tmpfs_dir]),
                (["-m"], ["sh", "-c", f"echo kept across restore > {tmpfs_dir}/data.txt"])):
            c.sh(["nsenter", "-t", str(pid)] + flags + cmd)
        time.sleep(0.5)
        # An unsupported link kind inside: the dump stops naming it, and the
        # container runs on, its cgroup thawed.
        if c.sh(["nsenter", "-t", str(pid), "-n", "ip", "link", "add", "ifb7", "type", "ifb"],
                check=False).returncode == 0:
            last = LogView(log).last_progress()
            r = c.ckpt(["dump", "--container", name, "-D", os.path.join(c.tmp, "bad")],
                       check=False)
            if r.returncode == 0 or "ifb7" not in r.stderr:
                raise Failure(f"dump with an ifb link: exit {r.returncode}, {r.stderr.strip()!r}")
            wait_for("the container made no progress after the refused dump",
                     lambda: (LogView(log).last_progress() or 0) > last + 3, PROGRESS_TIMEOUT)
            for p_ in c.cgroup_paths(name):
                ev = read_text(os.path.join(p_, "cgroup.events")) or ""
                st = read_text(os.path.join(p_, "freezer.state")) or ""
                if "frozen 1" in ev or "FROZEN" in st:
                    raise Failure(f"cgroup {p_} is still frozen after the refused dump")
            c.sh(["nsenter", "-t", str(pid), "-n", "ip", "link", "del", "ifb7"])
            note(f"  refused: {r.stderr.strip()[-120:]}; the container runs on, thawed")
        before = container_view(c, pid, tmpfs_dir)
        note(f"  container {name}: {len(before['tree'])} processes, "
             f"{len(before['mounts'])} mounts, ipc {before['ipc'].count('0x')} objects")
        host_if = re.search(r'host_ifname: "(.*)"', c.state(name))[1]
        for round_, host, extra in ((1, "hostA", []), (2, "hostB", ["--net", "bridge=br0"])):
            img = os.path.join(c.tmp, f"img{round_}")
            last = LogView(log).last_progress()
            c.ckpt(["dump", "--container", name, "-D", img])
            wait_for(f"init {pid} still runs after the dump", lambda: not task_alive(pid))
            if round_ == 1:
                # A restore that fails late removes what it made: processes,
                # cgroup, the host's veth end, the state file.
                r = c.sh(["ip", "netns", "exec", c.ns(host), env.ckpt_path, "restore",
                          "--container", name, "-D", img, "-d"], check=False,
                         env_extra={"CKPT_RUN_DIR": c.run_dir,
                                    "CKPT_CGROUP_PARENT": c.prefix + "ckpt",
                                    "CKPT_FAULT": "restore-before-resume"})
                if r.returncode == 0:
                    raise Failure("a restore with an injected fault exited 0")
                if os.path.exists(os.path.join(c.run_dir, name)):
                    raise Failure("a failed restore left a state file")
                if c.link_exists(host, host_if):
                    raise Failure(f"a failed restore left the veth {host_if} on the host")
                left = [p_ for p_ in glob.glob(f"/sys/fs/cgroup/*/{c.prefix}ckpt/{name}")
                        + glob.glob(f"/sys/fs/cgroup/*/*/{c.prefix}ckpt/{name}")]
                if left:
                    raise Failure(f"a failed restore left cgroups: {left}")
                strays = [p_ for p_ in all_pids() if log in cmdline(p_)]
                if strays:
                    raise Failure(f"a failed restore left processes: {strays}")
                note("  a restore failing before resume left no process, cgroup, veth or state")
            r = c.ckpt(["restore", "--container", name, "-D", img, "-d"] + extra, host=host)
            m = re.search(r"root pid (\d+)", r.stdout)
            if not m:
                raise Failure(f"restore printed {r.stdout.strip()!r}")
            pid = int(m[1])
            if c.ps(name) != (pid, "running"):
                raise Failure(f"ckpt ps shows {c.ps(name)} after restore")
            after = container_view(c, pid, tmpfs_dir)
            diffs = diff_views(before, after)
            if diffs:
                for d in diffs:
                    note("  diff: " + d)
                raise Failure(f"round {round_} ({host}): the container sees another "
                              f"world after restore: {diffs[0]}")
            first = None
            deadline = time.monotonic() + PROGRESS_TIMEOUT
            while time.monotonic() < deadline:
                vals = [v for v in LogView(log).progress if v > last]
                if len(vals) >= PROGRESS_STEP:
                    first = vals[0]
                    break
                time.sleep(0.1)
            if first != last + 1:
                raise Failure(f"round {round_}: progress resumed at {first}, expected {last + 1}")
            if LogView(log).fails:
                raise Failure(f"workload reported: {LogView(log).fails[0]}")
            r = c.sh(["ip", "netns", "exec", c.ns("client"), "ping", "-c", "2", "-i", "0.2",
                      "-W", "2", "10.77.0.11"], check=False)
            if r.returncode != 0:
                raise Failure(f"round {round_}: 10.77.0.11 not reachable from the client "
                              f"after restore on {host}")
            limit = None
            for p_ in c.cgroup_paths(name):
                if str(pid) not in (read_text(os.path.join(p_, "cgroup.procs")) or "").split():
                    raise Failure(f"round {round_}: init {pid} is not in {p_}")
                for f in ("memory.max", "memory.limit_in_bytes"):
                    v = read_text(os.path.join(p_, f))
                    if v is not None:
                        limit = int(v)
            if limit != 256 << 20:
                raise Failure(f"round {round_}: memory limit after restore is {limit}")
            note(f"  round {round_}: restored on {host} as pid {pid}; same view inside, "
                 f"progress {last}->{first}, the client reaches it")
        c.ckpt(["rm", "-f", name], host="hostB")

        # A container in a rootfs (pivot_root), detached: its stdio is a log
        # outside the rootfs, reached through ckpt's mounts only.
        root = make_rootfs(c.tmp, binary)
        name2 = c.prefix + "rfs"
        pid2 = c.run(name2, ["--rootfs", root, "--", "/bin/wl_tree", "--log", "/tmp/w.log"])
        log2 = os.path.join(root, "tmp", "w.log")
        wait_for("wl_tree in the rootfs did not log 'ready'", lambda: LogView(log2).ready,
                 READY_TIMEOUT)
        out_before = read_link(f"/proc/{pid2}/fd/1")
        tree_before = container_tree(pid2)
        last = LogView(log2).last_progress()
        c.ckpt(["dump", "--container", name2, "-D", os.path.join(c.tmp, "img-rfs")])
        wait_for(f"init {pid2} still runs after the dump", lambda: not task_alive(pid2))
        r = c.ckpt(["restore", "--container", name2, "-D", os.path.join(c.tmp, "img-rfs"), "-d"])
        pid2 = int(re.search(r"root pid (\d+)", r.stdout)[1])
        if read_link(f"/proc/{pid2}/fd/1") != out_before:
            raise Failure(f"rootfs container: stdout {out_before} -> "
                          f"{read_link(f'/proc/{pid2}/fd/1')}")
        diffs = diff_snapshots(tree_before, container_tree(pid2), 1)
        if diffs:
            raise Failure(f"rootfs container after restore: {diffs[0]}")
        wait_for("the rootfs container made no progress after restore",
                 lambda: (LogView(log2).last_progress() or 0) >= last + PROGRESS_STEP,
                 PROGRESS_TIMEOUT)
        if LogView(log2).fails or len(LogView(log2).starts) != 1:
            raise Failure(f"rootfs container: {LogView(log2).lines[-3:]}")
        note(f"  rootfs container restored as pid {pid2}; its log outside the rootfs is "
             "its stdout again, progress carries on")
        c.ckpt(["rm", "-f", name2])
    finally:
        c.cleanup()


def sc_container_tcp(env):
    """A container (ckpt run, its own network namespace on br0) serving TCP
    to a client on another simulated host is dumped with --tcp-established
    (its whole namespace locked), restored 1 s later on the same host, then
    dumped again and restored on the other host with the same IP: the client
    sees every echo, in order, with no reset, and no lock is left behind."""
    import types
    for tool in ("ip", "nft", "nsenter"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps)")
    binary = os.path.realpath(os.path.join(env.workloads_dir, "wl_tcpserv"))
    if not os.access(binary, os.X_OK):
        raise Failure(f"workload binary {binary} is missing")
    c = Containers(env)
    client = None

    def host_tables(host):
        return c.sh(["ip", "netns", "exec", c.ns(host), "nft", "list", "tables"]).stdout

    try:
        c.hosts("up")
        name = c.prefix + "tcpns"
        log = os.path.join(c.tmp, "srv.log")
        addr = "10.77.0.13"
        pid = c.run(name, ["--net", f"bridge=br0,ip={addr}/24,gw=10.77.0.1", "--",
                           binary, "--log", log, "--listen", f"{addr}:7000"])
        wait_for("the containerized wl_tcpserv did not log 'ready'",
                 lambda: LogView(log).ready, READY_TIMEOUT)
        client = Client(env, types.SimpleNamespace(tmp=c.tmp),
                        types.SimpleNamespace(ns=c.ns("client")), "ct",
                        ["--connect", f"{addr}:7000"])
        client.wait_more(0, 20)
        # Without the flag the dump stops naming the connection; the
        # container and its connection carry on, unlocked.
        r = c.ckpt(["dump", "--container", name, "-D", os.path.join(c.tmp, "noflag")],
                   check=False)
        if r.returncode == 0 or "--tcp-established" not in r.stderr:
            raise Failure(f"dump without --tcp-established: exit {r.returncode}, "
                          f"{r.stderr.strip()[-200:]!r}")
        client.wait_more(client.count(), 20)

        def lock_inside():
            out = c.sh(["nsenter", "-t", str(pid), "-n", "nft", "list", "tables"]).stdout
            return "ckpt_lock" in out

        # A dump failing with the namespace locked and the connection in
        # repair mode, then a dump --leave-running: both unlock it and the
        # connection carries on.
        r = c.sh(["ip", "netns", "exec", c.ns("hostA"), env.ckpt_path, "dump", "--container",
                  name, "-D", os.path.join(c.tmp, "fault"), "--tcp-established"], check=False,
                 env_extra={"CKPT_RUN_DIR": c.run_dir, "CKPT_CGROUP_PARENT": c.prefix + "ckpt",
                            "CKPT_FAULT": "dump-after-pages"})
        if r.returncode == 0:
            raise Failure("a dump with an injected fault exited 0")
        if not task_alive(pid) or lock_inside():
            raise Failure(f"after a failed dump: init alive {task_alive(pid)}, "
                          f"lock left {lock_inside()}")
        client.wait_more(client.count(), 20)
        c.ckpt(["dump", "--container", name, "-D", os.path.join(c.tmp, "leave"),
                "--tcp-established", "--leave-running"])
        if not task_alive(pid) or lock_inside():
            raise Failure(f"after dump --leave-running: init alive {task_alive(pid)}, "
                          f"lock left {lock_inside()}")
        client.wait_more(client.count(), 20)
        note("  a failed dump and a dump --leave-running left the connection running, unlocked")
        for round_, host, extra in ((1, "hostA", []), (2, "hostB", ["--net", "bridge=br0"])):
            img = os.path.join(c.tmp, f"img{round_}")
            c.ckpt(["dump", "--container", name, "-D", img, "--tcp-established"])
            at_dump = client.count()
            wait_for(f"init {pid} still runs after the dump", lambda: not task_alive(pid))
            lock = show_json(env, img, "netlock.img")
            if isinstance(lock, list):
                lock = lock[0]
            if not lock.get("netns") or not any(
                    cn.get("local_port") == 7000 for cn in lock.get("conns", [])):
                raise Failure(f"round {round_}: netlock.img does not lock the namespace "
                              f"with the connection on port 7000: {lock}")
            files = show_json(env, img, "files.img")
            conns = [d["tcp_sk"] for d in files if "tcp_sk" in d
                     and d["tcp_sk"].get("src_port") == 7000 and "repair" in d["tcp_sk"]]
            if not conns:
                raise Failure(f"round {round_}: files.img holds no repaired connection "
                              "on port 7000")
            if "ckpt_lock" in run_cmd([env.ckpt_path, "show", "-D", img, "netns.img"],
                                      "ckpt show").stdout:
                raise Failure(f"round {round_}: netns.img saved the lock with the firewall")
            if "ckpt_lock" in host_tables("hostA"):
                raise Failure(f"round {round_}: the dump left a lock table in hostA's "
                              f"namespace: {host_tables('hostA')}")
            # The client logs what it received at most every 100 ms: the
            # echoes of the moments before the freeze may be logged after
            # a fast dump has returned. Whatever it logs later is new.
            time.sleep(0.3)
            paused = client.count()
            time.sleep(1)
            client.check()
            if client.count() != paused:
                raise Failure(f"round {round_}: the client got echoes while the container "
                              f"was away ({paused} -> {client.count()})")
            r = c.ckpt(["restore", "--container", name, "-D", img, "--tcp-established",
                        "-d"] + extra, host=host)
            m = re.search(r"root pid (\d+)", r.stdout)
            if not m:
                raise Failure(f"restore printed {r.stdout.strip()!r}")
            pid = int(m[1])
            after = client.wait_more(at_dump, 30)
            lv = LogView(log)
            if lv.fails:
                raise Failure(f"round {round_}: server reported: {lv.fails[0]}")
            inside = c.sh(["nsenter", "-t", str(pid), "-n", "nft", "list", "tables"]).stdout
            if "ckpt_lock" in inside or "ckpt_lock" in host_tables(host):
                raise Failure(f"round {round_}: a lock table is left after the restore: "
                              f"{inside.strip()!r}")
            note(f"  round {round_}: restored on {host} as pid {pid}; the client went on "
                 f"{at_dump} -> {after} echoes, no reset")
        client.stop()
        client = None
        c.ckpt(["rm", "-f", name], host="hostB")
    finally:
        if client is not None and client.proc.poll() is None:
            client.proc.kill()
            client.proc.wait()
        c.cleanup()


def sc_container_run(env):
    """ckpt run -d in a simulated host (scripts/hosts): the workload is pid 1
    of its namespaces, with its hostname, bridge IP (pinged from the client),
    cgroup and memory limit; ps shows it; kill and rm remove everything. Then
    a tiny rootfs with pivot_root, removed with rm -f, and a foreground --rm."""
    for tool in ("ip", "ping", "nsenter", "ldd"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps)")
    binary = os.path.realpath(os.path.join(env.workloads_dir, "wl_counter"))
    if not os.access(binary, os.X_OK):
        raise Failure(f"workload binary {binary} is missing")
    c = Containers(env)
    try:
        c.hosts("up")
        c.hosts("up")  # idempotent

        # -- on the host's root, bridged -------------------------------------
        name = c.prefix + "web"
        log = os.path.join(c.tmp, "web.log")
        pid = c.run(name, ["--hostname", "h1", "--memory", "64M",
                           "--net", "bridge=br0,ip=10.77.0.10/24,gw=10.77.0.1",
                           "--", binary, "--log", log])
        wait_for("the containerized wl_counter did not log 'ready'",
                 lambda: LogView(log).ready, READY_TIMEOUT)
        lv = LogView(log)
        if lv.starts != ["start 1"] or lv.fails:
            raise Failure(f"workload is not pid 1 inside or failed: {lv.lines[:3]}")
        nspid = re.search(r"^NSpid:\s+(.*)$", read_text(f"/proc/{pid}/status", ""), re.M)
        if not nspid or nspid[1].split()[-1] != "1":
            raise Failure(f"NSpid of {pid} is {nspid and nspid[1]!r}, expected ... 1")
        inner = cmdline(f"{pid}/root/proc/1")
        if "wl_counter" not in inner:
            raise Failure(f"the container's /proc/1 is {inner!r}, not wl_counter")
        host = c.sh(["nsenter", "-t", str(pid), "-u", "hostname"]).stdout.strip()
        if host != "h1":
            raise Failure(f"hostname inside is {host!r}, expected h1")
        for ns in ("pid", "mnt", "uts", "ipc", "net"):
            if read_link(f"/proc/{pid}/ns/{ns}") == read_link(f"/proc/self/ns/{ns}"):
                raise Failure(f"the container shares our {ns} namespace")
        note("  pid 1 inside, hostname h1, own pid/mnt/uts/ipc/net namespaces")

        r = c.sh(["ip", "netns", "exec", c.ns("client"), "ping", "-c", "3", "-i", "0.2",
                  "-W", "2", "10.77.0.10"], check=False)
        if r.returncode != 0:
            raise Failure(f"10.77.0.10 not reachable from the client: {r.stdout.strip()[-200:]}")
        host_if = re.search(r'host_ifname: "(.*)"', c.state(name))[1]
        if not c.link_exists("hostA", host_if):
            raise Failure(f"no host veth {host_if} in hostA")
        note(f"  10.77.0.10 answers the client; host end {host_if} on hostA's br0")

        cg_paths = c.cgroup_paths(name)
        if not cg_paths:
            raise Failure("the state file names no cgroup")
        limit = None
        for p in cg_paths:
            procs = (read_text(os.path.join(p, "cgroup.procs")) or "").split()
            if str(pid) not in procs:
                raise Failure(f"init {pid} is not in {p}/cgroup.procs ({procs})")
            for f in ("memory.max", "memory.limit_in_bytes"):
                v = read_text(os.path.join(p, f))
                if v is not None:
                    limit = int(v)
        if limit != 64 << 20:
            raise Failure(f"memory limit is {limit}, expected {64 << 20}")
        note(f"  in its cgroup ({len(cg_paths)} hierarchies), memory limit 64 MiB")

        if c.ps(name) != (pid, "running"):
            raise Failure(f"ckpt ps shows {c.ps(name)}, expected ({pid}, 'running')")
        r = c.ckpt(["rm", name], check=False)
        if r.returncode != 1 or "running" not in r.stderr:
            raise Failure(f"ckpt rm of a running container: exit {r.returncode} {r.stderr!r}")
        c.ckpt(["kill", name])
        wait_for(f"init {pid} still runs after ckpt kill", lambda: not task_alive(pid))
        if c.ps(name) != (pid, "exited"):
            raise Failure(f"ckpt ps shows {c.ps(name)} after kill, expected exited")
        c.ckpt(["rm", name])
        check_container_removed(c, name, pid, cg_paths, host_if)
        note("  kill, then rm: no state, cgroup, veth or process left")

        # -- a tiny rootfs, removed with rm -f while running ---------------------
        root = make_rootfs(c.tmp, binary)
        name2 = c.prefix + "rfs"
        pid2 = c.run(name2, ["--rootfs", root, "--hostname", "h2", "--memory", "32M", "--",
                             "/bin/" + os.path.basename(binary), "--log", "/tmp/w.log"])
        log2 = os.path.join(root, "tmp", "w.log")
        wait_for("wl_counter in the rootfs did not log 'ready'",
                 lambda: LogView(log2).ready, READY_TIMEOUT)
        if LogView(log2).starts != ["start 1"]:
            raise Failure(f"rootfs workload: {LogView(log2).lines[:2]}")
        seen = sorted(os.listdir(f"/proc/{pid2}/root"))
        if seen != sorted(os.listdir(root)):
            raise Failure(f"the container's / holds {seen}, expected {sorted(os.listdir(root))}")
        if not os.path.exists(f"/proc/{pid2}/root/dev/null"):
            raise Failure("no /dev/null in the rootfs container")
        host = c.sh(["nsenter", "-t", str(pid2), "-u", "hostname"]).stdout.strip()
        if host != "h2":
            raise Failure(f"hostname in the rootfs container is {host!r}")
        if c.ps(name2) != (pid2, "running"):
            raise Failure(f"ckpt ps shows {c.ps(name2)} for the rootfs container")
        note("  rootfs container: pid 1, / is the rootfs, hostname h2")
        cg2 = c.cgroup_paths(name2)
        c.ckpt(["rm", "-f", name2])
        check_container_removed(c, name2, pid2, cg2, log=os.path.join(c.run_dir, name2 + ".log"))
        note("  rm -f of the running rootfs container removed everything")

        # -- foreground with --rm: exits with CMD's status, leaves nothing -------
        name3 = c.prefix + "fg"
        c.names.append(name3)
        r = c.ckpt(["run", "--rm", "--name", name3, "--", "/bin/sh", "-c",
                    'test "$$" = 1 && test "$(hostname)" != h1 && exit 7'], check=False)
        if r.returncode != 7:
            raise Failure(f"foreground ckpt run exited {r.returncode}, expected 7: "
                          f"{r.stderr.strip()[-200:]}")
        if os.path.exists(os.path.join(c.run_dir, name3)):
            raise Failure("ckpt run --rm left a state file")
        r = c.ckpt(["run", "--name", c.prefix + "bad", "--", "/nonexistent-cmd"], check=False)
        if r.returncode != 1 or "/nonexistent-cmd" not in r.stderr:
            raise Failure(f"exec failure: exit {r.returncode}, {r.stderr.strip()!r}")
        if os.path.exists(os.path.join(c.run_dir, c.prefix + "bad")):
            raise Failure("a container whose exec failed left a state file")
        note("  foreground --rm exits 7 as its command; a failed exec leaves nothing")
    finally:
        c.cleanup()
    if c.hosts_up and any(os.path.exists(f"/run/netns/{c.ns(h)}")
                          for h in ("hostA", "hostB", "client")):
        raise Failure("scripts/hosts down left namespaces behind")


SCENARIOS = {name: (lambda env, n=name: sc_workload(env, n)) for name in WORKLOADS}
SCENARIOS.update({
    "leave-running": sc_leave_running,
    "pidns": sc_pidns,
    "freeze-cgroup": sc_freeze_cgroup,
    "repeat": sc_repeat,
    "restore-after-kill": sc_restore_after_kill,
    "fault-dump": sc_fault_dump,
    "fault-restore": sc_fault_restore,
    "bad-images": sc_bad_images,
    "compress": sc_compress,
    "lazy-pages": sc_lazy_pages,
    "cli": sc_cli,
    "disk-full": sc_disk_full,
    "interrupt": sc_interrupt,
    "shell-job": sc_shell_job,
    "container-run": sc_container_run,
    "container": sc_container,
    "container-tcp": sc_container_tcp,
    "tcp": sc_tcp,
    "tcp-inflight": sc_tcp_inflight,
    "tcp-listen": sc_tcp_listen,
    "tcp-acceptq": sc_tcp_acceptq,
    "udp": sc_udp,
    "tcp-no-flag": sc_tcp_no_flag,
    "tcp-halfclosed": sc_tcp_halfclosed,
})


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", help="path to the ckpt binary")
    ap.add_argument("--workloads", help="directory with the wl_* binaries")
    ap.add_argument("--iters", type=int, default=1, help="dump/restore cycles (default 1)")
    ap.add_argument("--workload", choices=WORKLOADS,
                    help="override the workload of the generic scenarios")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (logs, images)")
    ap.add_argument("--timeout", type=float,
                    help="overall deadline in seconds (default 110 for one iteration, "
                         "then 60 + 50 per iteration; 0 disables)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), metavar="SCENARIO")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(SCENARIOS))
        sys.exit(0)
    if not (args.ckpt and args.workloads and args.scenario):
        ap.error("--ckpt, --workloads and SCENARIO are required")
    if args.iters < 1:
        ap.error("--iters must be at least 1")
    if args.timeout is None:
        args.timeout = 110 if args.iters == 1 else 60 + 50 * args.iters
    return args


def run_scenario(name, scenario, env, timeout, keep, cleanup=None, on_failure=None):
    """Runs scenario(env) as test `name`: SIGTERM/SIGINT/SIGHUP and a
    deadline of `timeout` s (0: none) end it as a failure; cleanup() runs
    on every path; prints the one result line. Returns the exit status
    (0 pass, 1 fail, 77 skip). Shared by the e2e scripts."""
    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    def on_alarm(signum, frame):
        raise Failure(f"scenario deadline of {timeout:.0f} s passed")

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGALRM, on_alarm)
    rc, reason = EXIT_FAIL, "internal error"
    try:
        if os.geteuid() != 0:
            raise Skip("needs root (ptrace, clone3 set_tid, namespaces, other users' /proc)")
        if not os.access(env.ckpt_path, os.X_OK):
            raise Failure(f"ckpt binary {env.ckpt_path} not found or not executable")
        if timeout > 0:
            signal.alarm(int(timeout))
        scenario(env)
        signal.alarm(0)
        rc, reason = EXIT_PASS, "PASS"
    except Skip as e:
        rc, reason = EXIT_SKIP, f"SKIP: {e}"
    except Failure as e:
        rc, reason = EXIT_FAIL, f"FAIL: {e}"
        if on_failure:
            on_failure()
        if not keep:
            note("rerun with --keep to keep the logs and images")
    except Interrupted as e:
        rc, reason = EXIT_FAIL, f"FAIL: interrupted by {e}"
    except Exception as e:
        traceback.print_exc()
        rc, reason = EXIT_FAIL, f"FAIL: harness error: {type(e).__name__}: {e}"
    finally:
        signal.alarm(0)
        if cleanup:
            cleanup()
    print(f"{name}: {reason}" if rc != EXIT_PASS else f"{name}: PASS "
          f"({time.monotonic() - _T0:.1f} s)", flush=True)
    return rc


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = Env(args)
    atexit.register(env.cleanup)

    def show_logs():
        for wl in env.workloads:
            lines = wl.log().lines
            if lines:
                note(f"wl_{wl.name} log, last lines:\n    " + "\n    ".join(lines[-10:]))

    return run_scenario(f"e2e.{args.scenario}", SCENARIOS[args.scenario], env, args.timeout,
                        args.keep, cleanup=env.cleanup, on_failure=show_logs)


if __name__ == "__main__":
    sys.exit(main())
