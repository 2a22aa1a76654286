#!/usr/bin/env python3
"""End-to-end tests of `ckpt job run`, `ckpt job status` and incremental
checkpoints (`ckpt dump --prev-images-dir`), with a real Slurm too.

Usage:
    job_e2e.py --ckpt BUILD/ckpt --workloads BUILD/tests/workloads [--keep] SCENARIO
    job_e2e.py --list

Exit status: 0 pass, 1 fail (the last line says why), 77 skip (with a reason).

The job is tests/workloads/wl_hashjob: it computes a digest step by step
over tens or hundreds of MiB and logs `step K DIGEST`; its final digest
depends only on its arguments, so a run that was checkpointed, stopped and
resumed must end with the digest of a run straight through (computed here
first, without ckpt). "Resumed, not restarted" is read from its log: one
`start` line, and steps that carry on instead of beginning again at 1.

Scenarios:
  job-preempt      SIGCONT+SIGTERM to ckpt and to every process of the job
                   (what Slurm does): checkpoint, exit 85; a rerun resumes
  job-interval     --interval with --keep; kill -9 of everything (a node
                   failure); the rerun resumes from the newest checkpoint
  job-incremental  --incremental: small checkpoints on top of a full one,
                   --keep keeps every parent a kept one needs, the chain
                   restores
  job-interrupted  a checkpoint half-written when ckpt dies is never used
  prev-images      ckpt dump --prev-images-dir, ckpt show, restore of a
                   chain; a parent replaced since is refused
  slurm            a real slurmctld and slurmd on this machine: sbatch of
                   scripts/slurm/ckpt-job.sbatch, scontrol requeue while it
                   runs, the requeued job resumes from its checkpoint

Every process a scenario started is killed and its temp dir (job-e2e-*,
job-slurm-*) removed on any exit path.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ckpt_e2e as h  # noqa: E402  (the shared harness)

from ckpt_e2e import Failure, Skip, note  # noqa: E402

EXIT_PASS, EXIT_FAIL, EXIT_SKIP = 0, 1, 77
EXIT_CHECKPOINTED = 85
STEP_RE = re.compile(r"^step (\d+) ([0-9a-f]+)$")
DONE_RE = re.compile(r"^done ([0-9a-f]+)$")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------
# A job under `ckpt job run`
# ---------------------------------------------------------------------------

class Job:
    """wl_hashjob with fixed arguments, run (and rerun) under ckpt job run."""

    def __init__(self, env, name, mib=64, steps=150, step_ms=30, pct=5, hot=False):
        self.env = env
        self.tmp = tempfile.mkdtemp(prefix=f"job-e2e-{name}-")
        env.tmps.append(self.tmp)
        self.dir = os.path.join(self.tmp, "ckpts")
        self.log_path = os.path.join(self.tmp, "job.log")
        self.result_path = os.path.join(self.tmp, "result")
        self.binary = os.path.join(env.workloads_dir, "wl_hashjob")
        if not os.access(self.binary, os.X_OK):
            raise Failure(f"{self.binary} is missing (build the workloads)")
        self.params = ["--mib", str(mib), "--steps", str(steps), "--dirty-pct", str(pct)]
        if hot:
            self.params.append("--hot")
        self.step_ms = step_ms
        self.runs = 0
        self.proc = None
        self.err_path = None

    def wl_args(self):
        return [self.binary, "--log", self.log_path, "--result", self.result_path,
                "--step-ms", str(self.step_ms)] + self.params

    def reference(self):
        """The digest of a run straight through, without ckpt."""
        log = os.path.join(self.tmp, "reference.log")
        res = os.path.join(self.tmp, "reference.result")
        r = subprocess.run([self.binary, "--log", log, "--result", res, "--step-ms", "0"]
                           + self.params, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=120)
        text = h.read_text(res, "")
        if r.returncode != 0 or not text.startswith("result "):
            raise Failure(f"reference run failed (exit {r.returncode}): {r.stderr!r}")
        note(f"reference result: {text.strip()}")
        return text.split()[1]

    def start(self, extra=()):
        self.runs += 1
        self.err_path = os.path.join(self.tmp, f"run{self.runs}.err")
        cmd = ([self.env.ckpt_path, "job", "run", "--checkpoint-dir", self.dir] + list(extra)
               + ["-v", "--log-file", os.path.join(self.tmp, f"run{self.runs}.log"), "--"]
               + self.wl_args())
        note(" ".join(cmd))
        with open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         start_new_session=True, cwd=self.tmp)
        return self

    def stderr(self, run=None):
        path = os.path.join(self.tmp, f"run{run or self.runs}.err")
        return h.read_text(path, "")

    def wait_exit(self, timeout=120):
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"ckpt job run did not end within {timeout} s: "
                          f"{self.stderr().strip()[-300:]}")
        note(f"  ckpt job run exited {rc}; it said:\n    "
             + "\n    ".join(self.stderr().strip().splitlines()[-6:]))
        return rc

    # -- the job's log --

    def log_lines(self):
        return (h.read_text(self.log_path, "") or "").splitlines()

    def steps(self):
        return [(int(m[1]), m[2]) for m in map(STEP_RE.match, self.log_lines()) if m]

    def last_step(self):
        s = self.steps()
        return s[-1][0] if s else 0

    def job_pids(self):
        """Pids of the workload (its `start` lines): restored ones keep theirs."""
        return [int(l.split()[1]) for l in self.log_lines() if l.startswith("start ")]

    def wait_steps(self, n, timeout=60):
        deadline = time.monotonic() + timeout
        while self.last_step() < n:
            self.check_no_fail()
            if self.proc.poll() is not None:
                raise Failure(f"ckpt job run exited {self.proc.returncode} before step {n}: "
                              f"{self.stderr().strip()[-300:]}")
            if time.monotonic() > deadline:
                raise Failure(f"the job did not reach step {n} within {timeout} s "
                              f"(at {self.last_step()})")
            time.sleep(0.05)

    def check_no_fail(self):
        fails = [l for l in self.log_lines() if l.startswith("FAIL")]
        if fails:
            raise Failure(f"the job reported: {fails[0]}")

    def check_resumed(self, ref, allow_replay):
        """One start, steps that carry on, the result of a straight run."""
        self.check_no_fail()
        starts = [l for l in self.log_lines() if l.startswith("start ")]
        if len(starts) != 1:
            raise Failure(f"the job started {len(starts)} times (restarted instead of "
                          f"resumed?): {starts}")
        seen = {}
        prev = 0
        replays = 0
        for k, digest in self.steps():
            if k in seen and seen[k] != digest:
                raise Failure(f"step {k} gave {digest} after the restore, {seen[k]} before")
            seen.setdefault(k, digest)
            if k != prev + 1:
                if not allow_replay or k > prev or k < 1:
                    raise Failure(f"the job's steps went from {prev} to {k}")
                replays += 1  # resumed from a checkpoint older than the kill
            prev = k
        done = [m[1] for m in map(DONE_RE.match, self.log_lines()) if m]
        if done != [ref]:
            raise Failure(f"the job ended with {done}, a straight run with {ref}")
        text = (h.read_text(self.result_path, "") or "").strip()
        if text != f"result {ref}":
            raise Failure(f"result file holds {text!r}, expected 'result {ref}'")
        note(f"  resumed and finished: steps 1..{prev}, {replays} replay(s), result {ref}")

    # -- ckpt job status --

    def status(self):
        r = subprocess.run([self.env.ckpt_path, "job", "status", "--json", self.dir],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Failure(f"ckpt job status exited {r.returncode}: {r.stderr.strip()}")
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise Failure(f"ckpt job status --json printed invalid JSON ({e}): {r.stdout[:300]}")

    def stable_status(self):
        """A status read twice the same: not caught halfway through a
        publish or a prune of the running ckpt."""
        a = self.status()
        for _ in range(20):
            b = self.status()
            if a == b:
                return a
            a = b
            time.sleep(0.02)
        return a

    def complete(self):
        return [c for c in self.status()["checkpoints"] if c["complete"]]

    # -- signals --

    def signal_like_slurm(self):
        """SIGCONT then SIGTERM to every process of the job, ckpt included."""
        pids = [self.proc.pid] + [p for p in self.job_pids() if h.task_alive(p)]
        note(f"  SIGCONT+SIGTERM to ckpt and the job: {pids}")
        for sig in (signal.SIGCONT, signal.SIGTERM):
            for p in pids:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass

    def kill_all(self):
        """A node failure: kill -9 ckpt and the job."""
        pids = [self.proc.pid] + [p for p in self.job_pids() if h.task_alive(p)]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        for p in pids:
            wait_vanished(p)


def wait_vanished(pid, timeout=15):
    deadline = time.monotonic() + timeout
    while h.task_exists(pid):
        if time.monotonic() > deadline:
            raise Failure(f"pid {pid} still exists {timeout} s after kill -9")
        time.sleep(0.05)


def check_chains(st, what):
    """Every parent a complete checkpoint names is there and complete."""
    complete = {c["name"]: c for c in st["checkpoints"] if c["complete"]}
    for c in complete.values():
        if c["parent"] and c["parent"] not in complete:
            raise Failure(f"{what}: {c['name']} needs {c['parent']}, which is gone")
        if not c["restorable"]:
            raise Failure(f"{what}: {c['name']} is not restorable: {st}")


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------

def sc_job_preempt(env):
    job = Job(env, "preempt", mib=64, steps=150, step_ms=30)
    ref = job.reference()
    job.start()
    job.wait_steps(20)
    pid = job.job_pids()[0]
    job.signal_like_slurm()
    rc = job.wait_exit(60)
    if rc != EXIT_CHECKPOINTED:
        raise Failure(f"ckpt job run exited {rc} on SIGTERM, expected {EXIT_CHECKPOINTED}")
    if "checkpoint ckpt-000001 (full)" not in job.stderr():
        raise Failure("no checkpoint reported on SIGTERM")
    wait_vanished(pid)
    st = job.status()
    if st["resume_from"] != "ckpt-000001" or st["latest"] != "ckpt-000001":
        raise Failure(f"after the checkpoint, job status says {st}")
    stopped_at = job.last_step()
    note(f"  checkpointed and stopped at step {stopped_at}")
    time.sleep(0.5)
    if job.last_step() != stopped_at:
        raise Failure("the job went on after ckpt said it stopped it")

    job.start()
    rc = job.wait_exit(120)
    if rc != 0:
        raise Failure(f"the resumed job run exited {rc}")
    if "resumed from checkpoint ckpt-000001" not in job.stderr():
        raise Failure("the second run did not say it resumed from ckpt-000001")
    job.check_resumed(ref, allow_replay=False)
    if job.status()["checkpoints"]:
        raise Failure("checkpoints are left after the job succeeded")


def sc_job_interval(env):
    job = Job(env, "interval", mib=64, steps=300, step_ms=30)
    ref = job.reference()
    job.start(["--interval", "1", "--keep", "2"])
    deadline = time.monotonic() + 60
    newest = ""
    while True:
        st = job.stable_status()
        names = [c["name"] for c in st["checkpoints"] if c["complete"]]
        # The newest may be published and the oldest not pruned yet.
        if len(names) > 3:
            raise Failure(f"--keep 2 but {len(names)} checkpoints are kept: {names}")
        if names:
            if st["latest"] not in names:
                raise Failure(f"latest {st['latest']} is not a kept checkpoint: {names}")
            newest = names[-1]
        if newest >= "ckpt-000004":
            break
        if time.monotonic() > deadline or job.proc.poll() is not None:
            raise Failure(f"no 4th checkpoint in time (have {names}): "
                          f"{job.stderr().strip()[-300:]}")
        time.sleep(0.1)
    note(f"  periodic checkpoints, kept: {names}")
    job.kill_all()
    st = job.status()
    note(f"  after kill -9: resume from {st['resume_from']}, leftovers {st['leftovers']}")
    resume = st["resume_from"]
    job.start(["--interval", "1", "--keep", "2"])
    rc = job.wait_exit(120)
    if rc != 0:
        raise Failure(f"the resumed job run exited {rc}")
    if f"resumed from checkpoint {resume}" not in job.stderr():
        raise Failure(f"the rerun did not resume from {resume}")
    job.check_resumed(ref, allow_replay=True)


def sc_job_incremental(env):
    job = Job(env, "incremental", mib=128, steps=800, step_ms=20, pct=5, hot=True)
    ref = job.reference()
    opts = ["--interval", "1", "--incremental", "--keep", "2", "--full-every", "4"]
    job.start(opts)
    deadline = time.monotonic() + 60
    seen = {}
    while True:
        st = job.stable_status()
        check_chains(st, "while running")
        for c in st["checkpoints"]:
            if c["complete"]:
                seen[c["name"]] = c
        if len(seen) >= 6:
            break
        if time.monotonic() > deadline or job.proc.poll() is not None:
            raise Failure(f"only {sorted(seen)} in time: {job.stderr().strip()[-300:]}")
        time.sleep(0.05)
    fulls = [c for c in seen.values() if not c["parent"]]
    incs = [c for c in seen.values() if c["parent"]]
    if not fulls or not incs:
        raise Failure(f"expected full and incremental checkpoints: {sorted(seen)}")
    full_pages = max(c["pages"] for c in fulls)
    for c in incs:
        note(f"  {c['name']} on {c['parent']}: {c['pages']} pages stored, "
             f"{c['parent_pages']} unchanged ({c['bytes']} bytes)")
        if c["pages"] >= full_pages or c["parent_pages"] == 0:
            raise Failure(f"{c['name']} stores {c['pages']} pages and leaves "
                          f"{c['parent_pages']} in its parent; a full one stores {full_pages}")
    # One taken while the job was still filling its memory may hold more;
    # with only the same 5% rewritten since, one must be small.
    smallest = min(c["pages"] for c in incs)
    if smallest * 7 > full_pages:
        raise Failure(f"the smallest incremental checkpoint stores {smallest} pages, a full one "
                      f"{full_pages}: more than 15% with 5% of the memory written")
    if "incremental on" not in job.stderr():
        raise Failure("ckpt job run reported no incremental checkpoint")
    job.signal_like_slurm()
    rc = job.wait_exit(60)
    if rc != EXIT_CHECKPOINTED:
        raise Failure(f"ckpt job run exited {rc} on SIGTERM, expected {EXIT_CHECKPOINTED}")
    st = job.status()
    check_chains(st, "after SIGTERM")
    last = [c for c in st["checkpoints"] if c["name"] == st["latest"]][0]
    note(f"  final checkpoint {last['name']}, parent {last['parent'] or '-'}")
    job.start(opts)
    rc = job.wait_exit(120)
    if rc != 0:
        raise Failure(f"the resumed job run exited {rc}")
    if f"resumed from checkpoint {last['name']}" not in job.stderr():
        raise Failure(f"the rerun did not resume from {last['name']}")
    job.check_resumed(ref, allow_replay=True)


def sc_job_interrupted(env):
    job = Job(env, "interrupted", mib=256, steps=200, step_ms=20)
    ref = job.reference()
    job.start(["--interval", "1", "--keep", "2"])
    deadline = time.monotonic() + 60
    while not job.complete():
        if time.monotonic() > deadline or job.proc.poll() is not None:
            raise Failure(f"no first checkpoint: {job.stderr().strip()[-300:]}")
        time.sleep(0.05)
    # Catch ckpt while it writes the next one, and kill it there.
    deadline = time.monotonic() + 30
    while True:
        if any(n.startswith(".partial-") for n in os.listdir(job.dir)):
            job.kill_all()
            break
        if time.monotonic() > deadline or job.proc.poll() is not None:
            raise Failure("never caught a checkpoint being written")
        time.sleep(0.002)
    st = job.status()
    note(f"  killed during a write: {st['leftovers']}, resume from {st['resume_from']}")
    if not any(l.startswith(".partial-") for l in st["leftovers"]):
        raise Failure(f"job status does not show the half-written checkpoint: {st}")
    good = st["resume_from"]
    if not good:
        raise Failure(f"no complete checkpoint to resume from: {st}")
    # Decoys: a complete-looking copy under a partial name, and a checkpoint
    # name without an inventory. Neither may ever be restored.
    shutil.copytree(os.path.join(job.dir, good), os.path.join(job.dir, ".partial-ckpt-000900"),
                    symlinks=True)
    os.mkdir(os.path.join(job.dir, "ckpt-000950"))
    st = job.status()
    if st["resume_from"] != good:
        raise Failure(f"a decoy is taken for a checkpoint: resume from {st['resume_from']}")
    job.start(["--interval", "3", "--keep", "2"])
    deadline = time.monotonic() + 30
    while "resumed from checkpoint" not in job.stderr():
        if time.monotonic() > deadline or job.proc.poll() is not None:
            raise Failure(f"the rerun did not resume: {job.stderr().strip()[-300:]}")
        time.sleep(0.05)
    if f"resumed from checkpoint {good}" not in job.stderr():
        raise Failure(f"the rerun resumed from something else than {good}")
    left = [n for n in os.listdir(job.dir) if n.startswith(".partial-")]
    if left:
        raise Failure(f"leftovers not cleaned at start: {left}")
    rc = job.wait_exit(120)
    if rc != 0:
        raise Failure(f"the resumed job run exited {rc}")
    job.check_resumed(ref, allow_replay=True)


def show(env, img, name):
    r = subprocess.run([env.ckpt_path, "show", "-D", img, name], capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise Failure(f"ckpt show {img} {name}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def sc_prev_images(env):
    henv = h.Env(types.SimpleNamespace(ckpt=env.ckpt_path, workloads=env.workloads_dir, iters=1,
                                       keep=env.keep, workload=None))
    env.harness = henv
    wl = henv.start("memory")
    before, stable, transient = wl.sample()
    tasks = h.snapshot_tasks(before)
    dirs = []
    for i in range(3):
        img = wl.new_dir("full" if i == 0 else f"incr{i}")
        extra = ["--prev-images-dir", "../" + os.path.basename(dirs[-1])] if dirs else []
        res = henv.ckpt.dump(wl, img, leave_running=i < 2, extra=extra)
        h.require_dump_ok(res, img, f"dump {i}")
        if dirs and "unchanged in the parent" not in res.stdout:
            raise Failure(f"incremental dump summary lacks the parent: {res.stdout.strip()}")
        dirs.append(img)
        note(f"  {res.stdout.strip()}")
    wl.reap_original()
    wl.wait_gone(tasks, "after the last dump")
    inv1, inv2 = show(env, dirs[1], "inventory.img"), show(env, dirs[2], "inventory.img")
    want = "../" + os.path.basename(dirs[1])
    if inv2.get("parent") != want or inv2.get("parent_id") != inv1.get("checkpoint_id"):
        raise Failure(f"inventory of the 2nd incremental: parent {inv2.get('parent')!r} "
                      f"id {inv2.get('parent_id')}, expected {want!r} id "
                      f"{inv1.get('checkpoint_id')}")
    if os.readlink(os.path.join(dirs[2], "parent")) != want:
        raise Failure("the parent link does not name the parent")
    pm = show(env, dirs[2], f"pagemap-{wl.root}.img")
    in_parent = sum(int(r.get("nr_pages", 0)) for r in pm.get("runs", []) if r.get("in_parent"))
    stored = int(pm.get("total_pages", 0))
    note(f"  root pagemap: {stored} pages stored, {in_parent} in the parent")
    if in_parent == 0:
        raise Failure("the incremental dump left no page in the parent")
    # A parent replaced by another checkpoint must be refused, clearly.
    moved = dirs[1] + "-real"
    os.rename(dirs[1], moved)
    shutil.copytree(dirs[0], dirs[1], symlinks=True)
    res = henv.ckpt.restore(wl, dirs[2], verbose=False)
    if res.rc != 1 or "not the checkpoint it was made on" not in res.stderr:
        raise Failure(f"restore over a replaced parent: exit {res.rc}: {res.error_line()}")
    note(f"  replaced parent refused: {res.error_line()}")
    shutil.rmtree(dirs[1])
    os.rename(moved, dirs[1])
    wl.wait_vanished(tasks, "before the restore")
    last = wl.log().last_progress()
    h.restore_and_check(henv, wl, dirs[2], before, stable, transient, "chain",
                        (1, last + 1))
    wl.watch(3)


# ---------------------------------------------------------------------------
# Slurm
# ---------------------------------------------------------------------------

SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


def ensure_slurm():
    tools = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue")
    if all(shutil.which(t) for t in tools):
        return
    note("installing " + " ".join(SLURM_PACKAGES) + " with apt-get")
    envv = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                       + SLURM_PACKAGES, capture_output=True, text=True, env=envv, timeout=600)
    if r.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=envv, timeout=300)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                           + SLURM_PACKAGES, capture_output=True, text=True, env=envv,
                           timeout=600)
    missing = [t for t in tools if not shutil.which(t)]
    if r.returncode != 0 or missing:
        raise Skip(f"Slurm cannot be installed here (apt-get exit {r.returncode}, missing "
                   f"{missing}): {(r.stderr or '').strip()[-200:]}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """munged, slurmctld and slurmd in the foreground, configured for this
    host only, all state in a temp dir; stopped on any exit."""

    def __init__(self, env):
        self.env = env
        self.tmp = tempfile.mkdtemp(prefix="job-slurm-")
        env.tmps.append(self.tmp)
        os.chmod(self.tmp, 0o755)  # munged wants its socket's dir searchable
        self.procs = []
        self.conf = os.path.join(self.tmp, "slurm.conf")
        self.host = socket.gethostname().split(".")[0]
        self.environ = dict(os.environ, SLURM_CONF=self.conf)
        env.slurm = self

    def write_config(self):
        t = self.tmp
        for d in ("state", "spool"):
            os.mkdir(os.path.join(t, d))
        with open(os.path.join(t, "munge.key"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(os.path.join(t, "munge.key"), 0o400)
        open(os.path.join(t, "plugstack.conf"), "w").close()
        conf = f"""# Written by tests/e2e/job_e2e.py: one node, this host, all state in {t}
ClusterName=ckptjob
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={t}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={t}/state
SlurmdSpoolDir={t}/spool
SlurmctldPidFile={t}/slurmctld.pid
SlurmdPidFile={t}/slurmd.pid
SlurmctldLogFile={t}/slurmctld.log
SlurmdLogFile={t}/slurmd.log
PlugStackConfig={t}/plugstack.conf
# The job's processes are found by ancestry: ckpt runs the job in a session
# of its own, which proctrack/pgid would lose (proctrack/cgroup works too).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# ckpt exits 85 after checkpointing on a signal: requeue such a job.
RequeueExit=85
# SIGTERM to SIGKILL: the time ckpt has to write the checkpoint.
KillWait=30
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=2000 State=UNKNOWN
PartitionName=batch Nodes={self.host} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=20
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    def daemon(self, name, cmd):
        out = open(os.path.join(self.tmp, f"{name}.out"), "w")
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             env=self.environ, start_new_session=True)
        self.procs.append((name, p))
        return p

    def start(self):
        t = self.tmp
        self.write_config()
        self.daemon("munged", ["munged", "--foreground", "--force",
                               f"--key-file={t}/munge.key", f"--socket={t}/munge.socket",
                               f"--pid-file={t}/munged.pid", f"--log-file={t}/munged.log",
                               f"--seed-file={t}/munged.seed"])
        self.wait_for(lambda: os.path.exists(f"{t}/munge.socket"), "munged", 10)
        self.daemon("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf])
        self.daemon("slurmd", ["slurmd", "-D", "-f", self.conf])
        self.wait_for(lambda: self.cmd(["sinfo", "-h", "-o", "%T"], check=False).strip()
                      in ("idle",), "an idle node", 30)
        note(f"slurm up in {t}: node {self.host} idle")

    def wait_for(self, pred, what, timeout):
        deadline = time.monotonic() + timeout
        while not pred():
            for name, p in self.procs:
                if p.poll() is not None:
                    self.show_logs()
                    raise Failure(f"{name} exited with {p.returncode} while waiting for {what}")
            if time.monotonic() > deadline:
                self.show_logs()
                raise Failure(f"no {what} within {timeout} s")
            time.sleep(0.2)

    def cmd(self, args, check=True):
        r = subprocess.run(args, capture_output=True, text=True, env=self.environ, timeout=30)
        if check and r.returncode != 0:
            raise Failure(f"{' '.join(args)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    def job_field(self, job_id, field):
        text = self.cmd(["scontrol", "show", "job", str(job_id)], check=False)
        m = re.search(rf"\b{field}=(\S+)", text)
        return m[1] if m else None

    def show_logs(self):
        for n in ("slurmctld.log", "slurmd.log", "munged.log", "slurmctld.out", "slurmd.out"):
            text = h.read_text(os.path.join(self.tmp, n), "")
            if text.strip():
                note(f"  {n}, last lines:\n    " + "\n    ".join(text.strip().splitlines()[-8:]))

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
        self.procs = []


def sc_slurm(env):
    if os.geteuid() != 0:
        raise Skip("needs root")
    ensure_slurm()
    slurm = Slurm(env)
    slurm.start()
    job = Job(env, "slurm", mib=256, steps=120, step_ms=100)
    ref = job.reference()
    script = os.path.join(REPO, "scripts", "slurm", "ckpt-job.sbatch")
    out = os.path.join(job.tmp, "slurm.out")
    envs = (f"ALL,CKPT={env.ckpt_path},CKPT_DIR={job.dir},CKPT_INTERVAL=0,"
            f"CKPT_LOG={os.path.join(job.tmp, 'ckpt.log')}")
    job_id = slurm.cmd(["sbatch", "--parsable", "--requeue", "--open-mode=append",
                        "-o", out, "-D", job.tmp, f"--export={envs}", script]
                       + job.wl_args()).strip().split(";")[0]
    note(f"submitted {script} as job {job_id}")
    env.slurm_jobs.append(job_id)

    def state():
        return slurm.job_field(job_id, "JobState")

    deadline = time.monotonic() + 60
    while job.last_step() < 25:
        job.check_no_fail()
        if time.monotonic() > deadline:
            slurm.show_logs()
            raise Failure(f"job {job_id} did not reach step 25 (state {state()}, log "
                          f"{job.log_lines()[-3:]}, output {h.read_text(out, '')!r})")
        time.sleep(0.1)
    pid = job.job_pids()[0]
    note(f"  job {job_id} running (pid {pid}), step {job.last_step()}: scontrol requeue")
    slurm.cmd(["scontrol", "requeue", job_id])
    wait_vanished(pid, timeout=40)
    stopped_at = job.last_step()
    note(f"  the job's process is gone at step {stopped_at}; job state {state()}")
    text = h.read_text(out, "")
    if "checkpoint ckpt-000001" not in text:
        slurm.show_logs()
        raise Failure(f"ckpt did not checkpoint the job on requeue: {text[-500:]!r}")
    # A requeued job waits (BeginTime) before it may start again; let it go.
    deadline = time.monotonic() + 60
    while state() != "PENDING":
        if time.monotonic() > deadline:
            raise Failure(f"job {job_id} not pending after requeue (state {state()})")
        time.sleep(0.2)
    slurm.cmd(["scontrol", "update", f"jobid={job_id}", "StartTime=now"])
    deadline = time.monotonic() + 120
    while state() != "COMPLETED":
        if state() in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            slurm.show_logs()
            raise Failure(f"job {job_id} ended {state()}: {h.read_text(out, '')[-500:]!r}")
        if time.monotonic() > deadline:
            slurm.show_logs()
            raise Failure(f"job {job_id} not completed in time (state {state()}, step "
                          f"{job.last_step()}): {h.read_text(out, '')[-500:]!r}")
        time.sleep(0.2)
    text = h.read_text(out, "")
    note("  job output:\n    " + "\n    ".join(text.strip().splitlines()[-8:]))
    if "resumed from checkpoint ckpt-000001" not in text:
        raise Failure("the requeued job did not resume from its checkpoint")
    restarts = slurm.job_field(job_id, "Restarts")
    if not restarts or int(restarts) < 1:
        raise Failure(f"Slurm counts {restarts} restarts of job {job_id}: it was not requeued")
    job.check_resumed(ref, allow_replay=False)
    steps = [k for k, _ in job.steps()]
    if steps[0] != 1 or stopped_at >= steps[-1]:
        raise Failure(f"progress log does not show a resume: {steps[:3]}..{steps[-3:]}")
    note(f"  requeued at step {stopped_at}, resumed at {stopped_at + 1}, finished at "
         f"{steps[-1]} with the result of a straight run")


SCENARIOS = {
    "job-preempt": sc_job_preempt,
    "job-interval": sc_job_interval,
    "job-incremental": sc_job_incremental,
    "job-interrupted": sc_job_interrupted,
    "prev-images": sc_prev_images,
    "slurm": sc_slurm,
}


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

class Env:
    def __init__(self, args):
        self.ckpt_path = os.path.realpath(args.ckpt)
        self.workloads_dir = os.path.realpath(args.workloads)
        self.keep = args.keep
        self.tmps = []
        self.harness = None
        self.slurm = None
        self.slurm_jobs = []
        self.cleaned = False

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        signal.alarm(0)
        if self.slurm:
            for j in self.slurm_jobs:
                self.slurm.cmd(["scancel", j], check=False)
        # ckpt job run, the job, anything else started from our temp dirs.
        for _ in range(3):
            victims = [p for p in h.all_pids() if p != os.getpid()
                       and any(t + "/" in h.cmdline(p) for t in self.tmps)]
            if not victims:
                break
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for p in victims:
                    try:
                        os.kill(p, sig)
                    except OSError:
                        pass
            time.sleep(0.3)
        if self.slurm:
            self.slurm.stop()
        if self.harness:
            self.harness.cleanup()
        for t in self.tmps:
            if self.keep:
                note(f"kept {t}")
            else:
                shutil.rmtree(t, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt")
    ap.add_argument("--workloads")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--timeout", type=float, default=0, help="overall deadline (s)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), metavar="SCENARIO")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        print("\n".join(SCENARIOS))
        return 0
    if not (args.ckpt and args.workloads and args.scenario):
        ap.error("--ckpt, --workloads and SCENARIO are required")
    timeout = args.timeout or (220 if args.scenario == "slurm" else 110)
    env = Env(args)
    return h.run_scenario(f"e2e.{args.scenario}", SCENARIOS[args.scenario], env, timeout,
                          args.keep, cleanup=env.cleanup)

if __name__ == "__main__":
    sys.exit(main())
