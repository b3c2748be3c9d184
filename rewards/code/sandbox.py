"""Runs untrusted programs: bubblewrap namespaces, a dedicated unprivileged uid, rlimits, caps.

Modes, strongest and fastest first (picked at start-up by `detect_mode`):
  bwrap-forkserver  per slot, a long-lived bwrap (user namespace) whose fork server gives every
                program fresh mount/pid/net/ipc namespaces, /work, /tmp, rlimits and no capabilities
  bwrap-userns  bwrap run by the sandbox uid, with its own user/pid/net/ipc/uts namespaces
  bwrap-root    bwrap run as root without user namespaces; the program drops to the sandbox uid
  rlimits       no namespaces: only the sandbox uid, rlimits and a new session
  none          nothing but rlimits, as the current user; only when the config says so
Every run gets its own uid (one per concurrent slot), so RLIMIT_NPROC counts only that run's
processes and everything the run left behind can be found and killed by uid.
"""
from __future__ import annotations

import logging
import os
import queue
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewards.code.sandbox_forkserver import HERE, INSIDE_DIR, INSIDE_FILES, ForkServers, inside_binds
from rewards.code.sandbox_procs import PidsCgroup, kill_uid

log = logging.getLogger("threefold.sandbox")

MODES = ("bwrap-forkserver", "bwrap-userns", "bwrap-root", "rlimits", "none")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
UID_BASE = 61000
UIDS_PER_SLOT = 8
SANDBOX_FAILURE = "sandbox failure"  # a RunResult note: the sandbox broke, not the program


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 32
    output_bytes: int = 1 << 20


@dataclass
class RunResult:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    channel: bytes = b""
    timed_out: bool = False
    output_exceeded: bool = False
    elapsed_s: float = 0.0
    mode: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def sandbox_failed(self) -> bool:
        return any(n.startswith(SANDBOX_FAILURE) for n in self.notes)

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode is not None and self.returncode < 0 else None


def _try(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20, env={"PATH": SANDBOX_PATH}).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def default_python() -> str:
    """The interpreter programs run with: the system python3 (not a virtualenv's)."""
    return next(p for p in ("/usr/bin/python3", shutil.which("python3")) if p and os.path.exists(p))


def detect_mode(python: str) -> list[str]:
    """The modes this machine supports, strongest first (always ends with rlimits, none)."""
    found = []
    bwrap = shutil.which("bwrap")
    root = os.geteuid() == 0
    if bwrap:
        probe = [bwrap, *_bwrap_fs(python, "/"), "--unshare-all", "--", python, "-c", "pass"]
        if _try(([*_drop(UID_BASE)] if root else []) + probe):
            found += ["bwrap-forkserver", "bwrap-userns"]
        if root and _try([bwrap, *_bwrap_fs(python, "/"), "--unshare-pid", "--unshare-net", "--", python, "-c", "pass"]):
            found.append("bwrap-root")
    return found + ["rlimits", "none"]


def _drop(uid: int) -> list[str]:
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]


def _rlimits(limits: Limits) -> list[str]:
    prlimit = shutil.which("prlimit") or "/usr/bin/prlimit"
    mem = limits.memory_mb << 20
    return [prlimit, f"--as={mem}", f"--cpu={limits.cpu_s}", f"--fsize={limits.file_size_mb << 20}",
            f"--nofile={limits.open_files}", f"--nproc={limits.processes}", "--core=0", "--"]


def _bwrap_fs(python: str, work: str, size: int | None = None) -> list[str]:
    """Read-only system dirs, a fresh /proc and read-only /dev, and private writable /work, /tmp
    and /dev/shm."""
    fs = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev"]
    for link in ("bin", "lib", "lib64", "sbin"):
        target = os.path.realpath(f"/{link}")
        fs += ["--symlink", target.lstrip("/"), f"/{link}"] if target.startswith("/usr/") else \
            (["--ro-bind-try", f"/{link}", f"/{link}"])
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    if not prefix.startswith("/usr"):
        fs += ["--ro-bind", prefix, prefix]
    sized = ["--size", str(size)] if size else []
    fs += [*sized, "--perms", "1777", "--tmpfs", "/tmp"]
    if work != "/":
        fs += [*sized, "--perms", "1777", "--tmpfs", "/work"]
        # /dev/shm gets its own tmpfs; the rest of /dev is read-only (device nodes still work)
        fs += [*sized, "--perms", "1777", "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    return fs


class Sandbox:
    """Thread-safe; at most `slots` programs run at once, each under its own uid."""

    def __init__(self, isolation: str = "auto", slots: int = 4, python: str | None = None, uid_base: int = UID_BASE,
                 pids_cgroup: bool = False):
        self.python = python or default_python()
        available = detect_mode(self.python)
        if isolation == "auto":
            self.mode = available[0]
        elif isolation == "bwrap":
            self.mode = next((m for m in available if m.startswith("bwrap")), "")
        else:
            self.mode = isolation if isolation in available else ""
        if not self.mode:
            raise SandboxUnavailable(f"isolation {isolation!r} is not available here (available: {', '.join(available)})")
        self.root = os.geteuid() == 0
        if self.mode == "rlimits" and not self.root:
            log.warning("sandbox: rlimits mode without root cannot switch uid; processes share your uid")
        # More uids than slots, used round-robin: zombies of a killed run (reaped by the host's
        # init, not by us) still count toward RLIMIT_NPROC of their uid for a moment.
        self.slots: queue.Queue[int] = queue.Queue()
        self.concurrency = threading.BoundedSemaphore(slots)
        self._dirty: set[int] = set()
        # Off by default: on cgroup v1 moving each program into its cgroup costs ~10 ms, and
        # RLIMIT_NPROC on the slot's own uid already bounds its processes.
        self.cgroups = PidsCgroup() if (self.root and pids_cgroup) else None
        # (A fork server's programs die with their pid namespace: one uid, one zygote per slot.)
        per_slot = 1 if self.mode == "bwrap-forkserver" else UIDS_PER_SLOT
        for i in range(slots * per_slot):
            self.slots.put(uid_base + i)
        self.forkservers = None
        if self.mode == "bwrap-forkserver":
            self.forkservers = ForkServers(self.python, _bwrap_fs(self.python, "/work"), self.root)
        self._harness_path = f"{INSIDE_DIR}/sandbox_harness.py"
        if not self.mode.startswith("bwrap"):  # no mount namespace: a copy the sandbox uids can read
            self._inside_copy = tempfile.mkdtemp(prefix="tf-sbx-code-")
            os.chmod(self._inside_copy, 0o755)
            for name in INSIDE_FILES:
                shutil.copy(Path(HERE, name), self._inside_copy)
                os.chmod(os.path.join(self._inside_copy, name), 0o644)
            self._harness_path = os.path.join(self._inside_copy, "sandbox_harness.py")
        log.info("sandbox isolation: %s (python %s, %d slots, cgroup pids.max: %s)", self.mode, self.python, slots,
                 "yes" if self.cgroups and self.cgroups.available else "no")

    def run_harness(self, program: str, request: bytes, limits: Limits = Limits()) -> RunResult:
        """A `function`/`script` test: the trusted harness (sandbox_harness.py) reads `request`
        on stdin after it has exec'd the candidate on `program` (the only file in its /work), and
        writes its records to the channel."""
        with self.concurrency:
            if self.forkservers is None:
                return self._run({"solution.py": program}, ["python", "-I", "-S", self._harness_path], request,
                                 limits, True)
            uid = self.slots.get()
            try:
                return self._run_forked(uid, {"solution.py": program}, "harness", [], request, limits)
            finally:
                self.slots.put(uid)

    def _argv(self, uid: int, work: str, files: list[str], argv: list[str], limits: Limits) -> list[str]:
        if self.mode.startswith("bwrap"):
            size = max(limits.file_size_mb << 20, 1 << 20) * 4
            fs = _bwrap_fs(self.python, "/work", size) + inside_binds()
            for name in files:
                fs += ["--ro-bind", os.path.join(work, name), f"/work/{name}"]
            fs += ["--remount-ro", "/"]  # the root itself; /work and /tmp stay writable
            unshare = ["--unshare-all"] if self.mode == "bwrap-userns" else \
                ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            ns = [*unshare, "--die-with-parent", "--new-session", "--chdir", "/work", "--clearenv",
                  "--setenv", "PATH", SANDBOX_PATH, "--setenv", "HOME", "/work", "--setenv", "LANG", "C.UTF-8",
                  "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--hostname", "sandbox"]
            bwrap = [shutil.which("bwrap"), *fs, *ns, "--"]
            if self.mode == "bwrap-userns":  # uid switched by Popen(user=...) before bwrap starts
                return [*self._cgroup(uid, limits), *_rlimits(limits), *bwrap, *argv]
            return [*bwrap, *_rlimits(limits), *_drop(uid), *argv]
        return [*self._cgroup(uid, limits), *_rlimits(limits), *argv]

    def _cgroup(self, uid: int, limits: Limits) -> list[str]:
        # bwrap-root starts bwrap as root, so only the uid-switched modes can join their cgroup.
        return self.cgroups.prepare(uid, limits.processes + 8) if self.cgroups else []

    def run(self, files: dict[str, str | bytes], argv: list[str], stdin: bytes = b"",
            limits: Limits = Limits(), channel: bool = False) -> RunResult:
        """Write `files` into a fresh work dir, run `argv` there (`python` means the sandbox's
        interpreter), feed `stdin`, and collect capped stdout/stderr (and the channel fd, whose
        number is passed as the last argument, when `channel`)."""
        with self.concurrency:
            return self._run(files, argv, stdin, limits, channel)

    def _run(self, files, argv, stdin, limits, channel) -> RunResult:
        uid = self.slots.get()
        if self.forkservers is not None:
            try:
                return self._run_forked(uid, files, "exec", argv, stdin, limits, channel)
            finally:
                self.slots.put(uid)
        work = tempfile.mkdtemp(prefix="tf-sbx-")
        try:
            os.chmod(work, 0o755)
            for name, content in files.items():
                data = content.encode() if isinstance(content, str) else content
                with open(os.path.join(work, name), "wb") as f:
                    f.write(data)
                os.chmod(os.path.join(work, name), 0o644)
            if self.mode in ("rlimits", "none") and self.root:
                os.chown(work, uid, uid)
            argv = [self.python if a == "python" else a for a in argv]
            return self._execute(uid, work, list(files), argv, stdin, limits, channel)
        finally:
            # In bwrap modes a run that ended by itself took its pid namespace down with it;
            # otherwise hunt down whatever still runs under its uid.
            if self.mode in ("rlimits",) or uid in self._dirty:
                if self.cgroups:
                    self.cgroups.kill_all(uid)
                kill_uid(uid)
                self._dirty.discard(uid)
            shutil.rmtree(work, ignore_errors=True)
            self.slots.put(uid)

    def _run_forked(self, uid, files, mode, argv, stdin, limits, channel=False) -> RunResult:
        data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
        exe = self.python if not argv or argv[0] == "python" else argv[0]
        rest = [*argv[1:], "3"] if channel else argv[1:]
        request = {"files": data, "mode": mode, "python": exe, "argv": rest,
                   "tmpfs_bytes": max(limits.file_size_mb << 20, 1 << 20) * 4,
                   "limits": {k: getattr(limits, k) for k in ("timeout_s", "cpu_s", "memory_mb", "file_size_mb",
                                                             "open_files", "processes", "output_bytes")}}
        out = self.forkservers.run(uid, request, stdin, limits.timeout_s)
        notes = [f"{SANDBOX_FAILURE}: {out['sandbox_failure']}"] if out.get("sandbox_failure") else []
        return RunResult(out["returncode"], out["stdout"], out["stderr"], out["channel"], out["timed_out"],
                         out["output_exceeded"], out["elapsed_s"], self.mode, notes)

    def infra_pids(self) -> set[int]:
        """Long-lived fork-server processes (bwrap, the zygote, its candidate template) that run
        under slot uids."""
        if self.forkservers is None:
            return set()
        pids = {p for z in self.forkservers.zygotes.values() for p in (z.proc.pid, z.pid)}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    template = b"sandbox_template.py" in f.read()
            except (OSError, ValueError, IndexError):
                continue
            if template and ppid in pids:
                pids.add(int(pid))
        return pids

    def close(self) -> None:
        if self.forkservers is not None:
            self.forkservers.close()
        if getattr(self, "_inside_copy", None):
            shutil.rmtree(self._inside_copy, ignore_errors=True)

    def _execute(self, uid, work, names, argv, stdin, limits, channel) -> RunResult:
        read_fd = write_fd = None
        if channel:
            read_fd, write_fd = os.pipe()
            argv = [*argv, str(write_fd)]
        cmd = self._argv(uid, work, names, argv, limits)
        start = time.perf_counter()
        switch = self.root and self.mode in ("bwrap-userns", "rlimits")
        ids = {"user": uid, "group": uid, "extra_groups": []} if switch else {}
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                cwd=work, env={"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}, start_new_session=True,
                                pass_fds=(write_fd,) if channel else (), **ids)
        if write_fd is not None:
            os.close(write_fd)
        if stdin:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        else:
            proc.stdin.close()
        out, err = bytearray(), bytearray()
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        chan = bytearray()
        if read_fd is not None:
            streams[read_fd] = chan
        timed_out, exceeded = _pump(proc, streams, start + limits.timeout_s, limits.output_bytes)
        if timed_out or exceeded:
            _kill_group(proc)
            self._dirty.add(uid)
        returncode = proc.wait()
        elapsed = time.perf_counter() - start
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        if read_fd is not None:
            os.close(read_fd)
        return RunResult(returncode, bytes(out), bytes(err), bytes(chan), timed_out, exceeded, elapsed, self.mode)


def _feed(pipe, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
        pipe.close()
    except OSError:  # the program exited or closed stdin early
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _pump(proc: subprocess.Popen, streams: dict[int, bytearray], deadline: float, cap: int) -> tuple[bool, bool]:
    """Read every stream until EOF; stop at the deadline or once any stream passes `cap` bytes.
    Once the main process has exited, leftovers (daemonised grandchildren) get 0.2 s."""
    sel = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    exited_at = None
    try:
        while sel.get_map():
            now = time.perf_counter()
            if now >= deadline:
                return True, False
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                return False, False
            for key, _ in sel.select(timeout=min(0.05, deadline - now)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = streams[key.fd]
                buf += chunk[: max(0, cap + 1 - len(buf))]
                if len(buf) > cap:
                    del buf[cap:]
                    return False, True
        return False, False
    finally:
        sel.close()
