"""Host side of the fork-server sandbox: one long-lived bwrap + sandbox_zygote.py per slot uid.

Same isolation per program as a fresh bwrap (own mount/pid/net/ipc namespaces, fresh /work and
/tmp, rlimits, no capabilities), without paying bwrap's set-up and an interpreter start-up per
program. A zygote that misbehaves is killed and replaced; its program's run is reported killed.
"""
from __future__ import annotations

import _pickle as pickle
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from rewards.code.sandbox_harness import recv as recv_frame

log = logging.getLogger("threefold.sandbox")
HERE = Path(__file__).resolve().parent
INSIDE_DIR = "/opt/threefold"
INSIDE_FILES = ("sandbox_zygote.py", "sandbox_harness.py", "sandbox_candidate.py", "sandbox_template.py")


def inside_binds() -> list[str]:
    """bwrap arguments that show the sandbox-side files, and nothing else of ours, at INSIDE_DIR."""
    binds = [a for name in INSIDE_FILES for a in ("--ro-bind", str(HERE / name), f"{INSIDE_DIR}/{name}")]
    return ["--perms", "0755", "--dir", INSIDE_DIR, *binds]  # readable once the program drops its uid


def _send(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj, protocol=4)
    sock.sendall(len(data).to_bytes(4, "big") + data)


class Zygote:
    def __init__(self, uid: int, python: str, fs: list[str], root: bool):
        self.sock, theirs = socket.socketpair()
        bwrap = [shutil.which("bwrap"), *fs, *inside_binds(),
                 "--remount-ro", "/", "--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL",
                 "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try", "--die-with-parent",
                 "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--",
                 python, "-I", "-S", f"{INSIDE_DIR}/sandbox_zygote.py", str(theirs.fileno())]
        ids = {"user": uid, "group": uid, "extra_groups": []} if root else {}
        self.log = tempfile.TemporaryFile()  # zygote diagnostics; a pipe nobody drains could block it
        self.proc = subprocess.Popen(bwrap, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.log, env={"PATH": "/usr/bin:/bin"},
                                     start_new_session=True, **ids)
        theirs.close()
        try:
            kind, self.pid = pickle.loads(recv_frame(self.sock.fileno(), 60.0))
        except Exception as e:
            self.log.seek(0)
            err = self.log.read(4000).decode(errors="replace")
            self.close()
            raise RuntimeError(f"sandbox fork server did not start: {e} {err}") from None
        if kind != "ready":
            self.close()
            raise RuntimeError("sandbox fork server sent no greeting")

    def run(self, request: dict, stdin: bytes, timeout_s: float) -> dict:
        _send(self.sock, ("run", request))
        _send(self.sock, ("stdin", stdin))
        # The zygote enforces timeout_s itself; the extra margin only catches a hung zygote.
        kind, result = pickle.loads(recv_frame(self.sock.fileno(), timeout_s + 15))
        return result

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        self.sock.close()
        self.log.close()


class ForkServers:
    """One zygote per uid, started on first use and replaced when it fails."""

    def __init__(self, python: str, fs: list[str], root: bool):
        self.python, self.fs, self.root = python, fs, root
        self.zygotes: dict[int, Zygote] = {}

    def run(self, uid: int, request: dict, stdin: bytes, timeout_s: float) -> dict | None:
        """The run's result, or None when the zygote failed (it is replaced on the next run)."""
        zyg = self.zygotes.get(uid)
        if zyg is None or zyg.proc.poll() is not None:
            zyg = self.zygotes[uid] = Zygote(uid, self.python, self.fs, self.root)
        start = time.perf_counter()
        try:
            return zyg.run(request, stdin, timeout_s)
        except Exception as e:  # noqa: BLE001 - broken pipe, hang, garbage: replace the zygote
            zyg.log.seek(0)
            why = f"sandbox fork server failed ({type(e).__name__}): {zyg.log.read()[-2000:].decode(errors='replace')}"
            log.warning("%s", why)
            zyg.close()
            del self.zygotes[uid]
            return {"returncode": -signal.SIGKILL, "stdout": b"", "stderr": why.encode(), "channel": b"",
                    "timed_out": time.perf_counter() - start >= timeout_s, "output_exceeded": False,
                    "elapsed_s": time.perf_counter() - start, "sandbox_failure": why}

    def close(self) -> None:
        for zyg in self.zygotes.values():
            zyg.close()
        self.zygotes.clear()
