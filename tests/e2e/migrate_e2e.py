#!/usr/bin/env python3
"""End-to-end tests of live migration: `ckpt migrate` and `ckpt receive`
between the simulated hosts of scripts/hosts.

Usage:
    migrate_e2e.py --ckpt BUILD/ckpt --workloads BUILD/tests/workloads [--keep] SCENARIO
    migrate_e2e.py --list

Exit status: 0 pass, 1 fail (the last line says why), 77 skip (with a reason).

The container runs tests/workloads/wl_tcpserv with --mem-mib: an echo
server that also rewrites 1% of its memory every second and verifies all of
it every second, in itself and in a child it forks every 2 s. A
tcp_client in the client namespace exchanges numbered messages with it the
whole time and fails on any reset, wrong or missing echo.

Scenarios:
  migrate-precopy        hostA -> hostB, pre-copy, with a shared key: the
                         client carries on with no reset, the server's
                         memory checks pass, the container runs on hostB
                         only, the table shows the rounds and the downtime
  migrate-postcopy       the same in post-copy (pages after the resume)
  migrate-stop-and-copy  the same, stop and copy, and back to hostA with a
                         preview that differs from the images: the root
                         made ahead from it is discarded, the restore makes
                         its own (every other move takes the one made ahead)
  migrate-failures       a wrong key is refused by both ends; a destination
                         killed in the middle of a migration: each time the
                         container carries on on hostA, untouched, and
                         nothing is left on hostB

Every process, namespace, cgroup and temp dir a scenario made is removed on
any exit path.
"""

import argparse
import glob
import os
import re
import signal
import subprocess
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_e2e as h  # noqa: E402  (the shared harness)

from ckpt_e2e import Failure, Skip, note  # noqa: E402

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77
PORT = 7300
MEM_MIB = 64


class Hosts(h.Containers):
    """Containers on two simulated hosts, each with its own ckpt state and
    cgroup parent (as two machines would have)."""

    def __init__(self, env):
        super().__init__(env)
        self.procs = []

    def host_env(self, host):
        return {"CKPT_RUN_DIR": os.path.join(self.tmp, f"state-{host}"),
                "CKPT_CGROUP_PARENT": f"{self.prefix}ckpt-{host}"}

    def ckpt(self, args, host="hostA", check=True, env_extra=None):
        cmd = ["ip", "netns", "exec", self.ns(host), self.env.ckpt_path] + args
        note(f"[{host}] ckpt " + " ".join(args) + (f" ({env_extra})" if env_extra else ""))
        return self.sh(cmd, check=check, env_extra={**self.host_env(host), **(env_extra or {})})

    def spawn(self, args, host, log, env_extra=None):
        """ckpt ARGS on HOST in the background, output to LOG."""
        cmd = ["ip", "netns", "exec", self.ns(host), self.env.ckpt_path] + args
        note(f"[{host}] ckpt " + " ".join(args) + " &")
        e = dict(os.environ)
        e.pop("CKPT_FAULT", None)
        e.update(self.host_env(host))
        e.update(env_extra or {})
        out = open(log, "w")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=e, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def ps_on(self, host):
        out = self.ckpt(["ps"], host).stdout.splitlines()[1:]
        return {l.split()[0]: int(l.split()[1]) for l in out if l.split()}

    def cleanup(self):
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.kill()
                p.wait()
        for host in ("hostB", "hostA"):
            if not self.hosts_up:
                break
            for name in self.names:
                try:
                    self.ckpt(["rm", "-f", name], host, check=False)
                except Exception as e:
                    note(f"cleanup of container {name} on {host}: {e}")
        self.names = []
        super().cleanup()
        for host in ("hostA", "hostB"):
            self.sweep_cgroups(f"{self.prefix}ckpt-{host}")


class Service:
    """The container (wl_tcpserv with memory) on hostA and its client."""

    def __init__(self, env, hosts, label, ip):
        self.env, self.c, self.ip = env, hosts, ip
        self.name = hosts.prefix + label
        self.log = os.path.join(hosts.tmp, f"{label}.log")
        binary = os.path.realpath(os.path.join(env.workloads_dir, "wl_tcpserv"))
        if not os.access(binary, os.X_OK):
            raise Failure(f"workload binary {binary} is missing")
        self.pid = hosts.run(self.name, [
            "--net", f"bridge=br0,ip={ip}/24,gw=10.77.0.1", "--", binary, "--log", self.log,
            "--listen", f"{ip}:7000", "--mem-mib", str(MEM_MIB)])
        h.wait_for(f"{self.name}: wl_tcpserv did not log 'ready'",
                   lambda: h.LogView(self.log).ready, h.READY_TIMEOUT)
        self.client = h.Client(env, types.SimpleNamespace(tmp=hosts.tmp),
                               types.SimpleNamespace(ns=hosts.ns("client")), label,
                               ["--connect", f"{ip}:7000"])
        self.client.wait_more(0, 20)

    def server_progress(self):
        lv = h.LogView(self.log)
        if lv.fails:
            raise Failure(f"{self.name}: the server reported: {lv.fails[0]}")
        return lv.end

    def carries_on(self, what):
        """The client gets more echoes and the server logs more progress
        (its memory checks passed meanwhile, in it and in its children)."""
        base = self.server_progress()
        n = self.client.wait_more(self.client.count(), 30)
        h.wait_for(f"{self.name}: server progress after {what}",
                   lambda: self.server_progress() >= base + 2, 20)
        note(f"  {what}: the client is at echo {n}, the server checks its memory")

    def pauses(self):
        return [int(m[1]) for l in self.client.lines()
                if (m := re.match(r"pause (\d+) ms", l))]


def write_key(c, name, text):
    path = os.path.join(c.tmp, name)
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)
    return path


def need_tools():
    for tool in ("ip", "nft", "nsenter"):
        if not h.shutil.which(tool):
            raise Skip(f"{tool} is not installed (scripts/deps)")


HOST_ADDR = {"hostA": "10.77.0.1", "hostB": "10.77.0.2"}


def migrate_once(env, mode, ip, moves=1, stale_move=0):
    """Moves a service hostA -> hostB (then back and forth, `moves` times in
    all: a container restored by ckpt receive must dump again). The
    destination makes the container's root from the source's preview before
    the stop and the restore takes it; at move `stale_move` the preview
    differs from the images (injected) and the restore makes its own."""
    need_tools()
    c = Hosts(env)
    try:
        c.hosts("up")
        svc = Service(env, c, mode.replace("-", ""), ip)
        key = write_key(c, "key", "correct horse battery staple")
        src, dst, src_pid = "hostA", "hostB", svc.pid
        for move in range(1, moves + 1):
            recv_log = os.path.join(c.tmp, f"receive-{move}.log")
            recv = c.spawn(["receive", "--listen", f"{HOST_ADDR[dst]}:{PORT}", "--once",
                            "--psk-file", key, "--net", "bridge=br0", "-v"], dst, recv_log)
            time.sleep(0.3)
            before = svc.client.count()
            stale = move == stale_move
            r = c.ckpt(["migrate", "--container", svc.name, "--to", f"{HOST_ADDR[dst]}:{PORT}",
                        "--psk-file", key, "--mode", mode], src, check=False,
                       env_extra={"CKPT_FAULT": "stale-preview"} if stale else None)
            what = f"move {move} ({src} -> {dst})"
            if r.returncode != 0:
                raise Failure(f"{what}: migrate exited {r.returncode}: {r.stderr.strip()[-400:]} "
                              f"(receive: {h.read_text(recv_log, '')[-400:]!r})")
            out = r.stdout
            note("  " + out.strip().replace("\n", "\n  "))
            m = re.search(r"downtime ([\d.]+) ms", out)
            if not m or "round" not in out or "final" not in out:
                raise Failure(f"{what}: migrate printed no table with a downtime: {out!r}")
            downtime = float(m[1])
            if mode == "precopy" and not re.search(r"^1\s+\d+", out, re.M):
                raise Failure(f"{what}: pre-copy made no second round (the table has no round 1)")
            if mode == "postcopy" and "post-copy:" not in out:
                raise Failure(f"{what}: post-copy printed no line about pages sent after the "
                              "resume")
            try:
                rc = recv.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise Failure(f"{what}: ckpt receive --once did not exit after the migration")
            if rc != 0 or "received container" not in h.read_text(recv_log, ""):
                raise Failure(f"{what}: ckpt receive exited {rc}: "
                              f"{h.read_text(recv_log, '')[-400:]!r}")
            rlog = h.read_text(recv_log, "")
            if "root made ahead" not in rlog:
                raise Failure(f"{what}: the destination did not make the root ahead: "
                              f"{rlog[-600:]!r}")
            remade = "the root made ahead differs from the images" in rlog
            # The root lives in the network namespace made ahead: if that
            # changed between the preview and the stop (the log says how),
            # both are made again, rightly.
            net_changed = re.search(r"network namespace built ahead: the tree's differs.*", rlog)
            if remade and not stale and net_changed:
                note(f"  {what}: {net_changed[0][:300]}")
            elif remade != stale:
                raise Failure(f"{what}: the preview was {'stale' if stale else 'current'}, "
                              f"but the restore {'made' if remade else 'took'} the root "
                              f"{'again' if remade else 'made ahead'}")
            note(f"  {what}: the root made ahead was "
                 f"{'discarded (stale preview) and made again' if stale else 'taken'}")
            svc.carries_on(f"after {what}")
            if svc.client.count() <= before:
                raise Failure(f"{what}: the client did not carry on")
            on_src, on_dst = c.ps_on(src), c.ps_on(dst)
            if svc.name in on_src or svc.name not in on_dst:
                raise Failure(f"after {what}: {src} runs {sorted(on_src)}, "
                              f"{dst} runs {sorted(on_dst)}")
            if h.task_alive(src_pid):
                raise Failure(f"{what}: the source container's init {src_pid} still runs")
            src_pid = on_dst[svc.name]
            inside = c.sh(["nsenter", "-t", str(src_pid), "-n", "nft", "list", "tables"]).stdout
            if "ckpt_lock" in inside:
                raise Failure(f"{what}: a lock table is left in the migrated container: "
                              f"{inside!r}")
            pauses = svc.pauses()
            note(f"  {what}: downtime {downtime:.1f} ms; the client saw pauses of {pauses} ms")
            src, dst = dst, src
        # The client's longest wait covers the downtime and one retransmit.
        svc.carries_on("a while later")
        svc.client.stop()
        c.ckpt(["rm", "-f", svc.name], src)
    finally:
        c.cleanup()


def sc_precopy(env):
    migrate_once(env, "precopy", "10.77.0.31", moves=3)


def sc_postcopy(env):
    migrate_once(env, "postcopy", "10.77.0.32")


def sc_stop_and_copy(env):
    migrate_once(env, "stop-and-copy", "10.77.0.33", moves=2, stale_move=2)


def sc_failures(env):
    need_tools()
    c = Hosts(env)
    try:
        c.hosts("up")
        svc = Service(env, c, "fail", "10.77.0.34")
        good = write_key(c, "good", "the right key")
        bad = write_key(c, "bad", "a wrong key")

        # A listening receiver ends on SIGTERM (and Ctrl-C), with a clear line.
        recv_log = os.path.join(c.tmp, "receive-term.log")
        recv = c.spawn(["receive", "--listen", f"10.77.0.2:{PORT}", "--once"], "hostB", recv_log)
        h.wait_for("receive to listen", lambda: "listening" in h.read_text(recv_log, ""), 10)
        recv.send_signal(signal.SIGTERM)
        try:
            rc = recv.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise Failure("ckpt receive did not end on SIGTERM while listening")
        if rc == 0 or "interrupted" not in h.read_text(recv_log, ""):
            raise Failure(f"receive on SIGTERM: exit {rc}, {h.read_text(recv_log, '')!r}")
        note("  a listening receiver ends on SIGTERM")

        # A wrong key: both ends refuse, nothing moves.
        recv_log = os.path.join(c.tmp, "receive-key.log")
        recv = c.spawn(["receive", "--listen", f"10.77.0.2:{PORT}", "--once", "--psk-file", good,
                        "--net", "bridge=br0"], "hostB", recv_log)
        time.sleep(0.3)
        r = c.ckpt(["migrate", "--container", svc.name, "--to", f"10.77.0.2:{PORT}",
                    "--psk-file", bad], "hostA", check=False)
        if r.returncode == 0 or "authentication" not in r.stderr:
            raise Failure(f"migrate with a wrong key: exit {r.returncode}, {r.stderr.strip()!r}")
        if recv.wait(timeout=30) == 0 or "authentication" not in h.read_text(recv_log, ""):
            raise Failure(f"receive accepted a wrong key: {h.read_text(recv_log, '')!r}")
        note(f"  wrong key: {r.stderr.strip().splitlines()[-1]}")
        svc.carries_on("a refused key")

        # The destination killed in the middle of pre-copy (after the first
        # round arrived), then a destination whose restore fails (injected
        # fault, after the memory of the tree is rebuilt).
        for label, fault in (("killed during pre-copy", None),
                             ("failing its restore", "restore-after-mm")):
            recv_log = os.path.join(c.tmp, f"receive-{label.split()[0]}.log")
            args = ["receive", "--listen", f"10.77.0.2:{PORT}", "--once", "--psk-file", good,
                    "--net", "bridge=br0", "-v"]
            recv = c.spawn(args, "hostB", recv_log, {"CKPT_FAULT": fault} if fault else None)
            time.sleep(0.3)
            pauses_before = len(svc.pauses())
            mig = subprocess.Popen(
                ["ip", "netns", "exec", c.ns("hostA"), env.ckpt_path, "migrate", "--container",
                 svc.name, "--to", f"10.77.0.2:{PORT}", "--psk-file", good],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env={**os.environ, **c.host_env("hostA")}, start_new_session=True)
            c.procs.append(mig)
            if not fault:
                h.wait_for("receive to log the first pre-copy round",
                           lambda: "pre-copy round 1" in h.read_text(recv_log, ""), 30)
                recv.kill()
            try:
                _, err = mig.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                raise Failure(f"migrate, destination {label}: did not end")
            if mig.returncode == 0:
                raise Failure(f"migrate, destination {label}: exit 0")
            note(f"  destination {label}: {err.strip().splitlines()[-1]}")
            if recv.wait(timeout=30) == 0:
                raise Failure(f"receive, {label}: exit 0")
            if not h.task_alive(svc.pid):
                raise Failure(f"destination {label}: the source container's init {svc.pid} "
                              "is gone")
            svc.carries_on(f"a destination {label}")
            # A restore that fails hands the tree back at once: the client
            # waits for the stop, the restore and the way back, not longer.
            worst = max(svc.pauses()[pauses_before:], default=0)
            if fault and worst > 2000:
                raise Failure(f"destination {label}: the client waited {worst} ms for the "
                              "container to carry on")
            if svc.name in c.ps_on("hostB"):
                raise Failure(f"destination {label}: hostB still has the container")
            left = c.sh(["ip", "-n", c.ns("hostB"), "-o", "link", "show", "master", "br0"]).stdout
            if "ck-" in left:
                raise Failure(f"destination {label}: a container veth is left on hostB: "
                              f"{left!r}")
            cgs = [d for d in glob.glob(f"/sys/fs/cgroup/**/{c.prefix}ckpt-hostB/{svc.name}",
                                        recursive=True) if os.path.isdir(d)]
            # A receive killed with SIGKILL after the source sent its
            # preview (the rounds of this small container are quick) leaves
            # the empty cgroup it made ahead; the next receive of the
            # container removes it, which the next case checks. A failing
            # restore removes its own.
            if cgs and not (label.startswith("killed") and
                            "preview:" in h.read_text(recv_log, "")):
                raise Failure(f"destination {label}: its cgroup is left on hostB: {cgs}")
            if cgs:
                note(f"  destination {label} after the source stopped: its empty cgroup "
                     "is left for the next receive to remove")
        svc.client.stop()
    finally:
        c.cleanup()


SCENARIOS = {
    "migrate-precopy": sc_precopy,
    "migrate-postcopy": sc_postcopy,
    "migrate-stop-and-copy": sc_stop_and_copy,
    "migrate-failures": sc_failures,
}


class Env:
    def __init__(self, args):
        self.ckpt_path = os.path.realpath(args.ckpt)
        self.workloads_dir = os.path.realpath(args.workloads)
        self.keep = args.keep


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt")
    ap.add_argument("--workloads")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), metavar="SCENARIO")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if not (args.ckpt and args.workloads and args.scenario):
        ap.error("--ckpt, --workloads and SCENARIO are required")
    return h.run_scenario(f"e2e.{args.scenario}", SCENARIOS[args.scenario], Env(args), 170,
                          args.keep)

if __name__ == "__main__":
    sys.exit(main())
