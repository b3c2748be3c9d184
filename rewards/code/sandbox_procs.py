"""A sandbox uid's processes: find and kill them all, and cap them with a cgroup `pids.max`."""
from __future__ import annotations

import os
import signal


class PidsCgroup:
    """cgroup v1/v2 `pids.max` per sandbox uid, where the host lets us create cgroups.

    The program joins its cgroup itself (a shell writes its own pid, then execs), so nothing it
    forks can start outside: the uid owns its `cgroup.procs`, nothing else."""

    def __init__(self, root: str | None = None):
        self.root = root or next((r for r in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                                  if os.path.isfile(os.path.join(r, "cgroup.procs"))), None)
        self.base = os.path.join(self.root, "threefold-sandbox") if self.root else None
        try:
            os.makedirs(self.base, exist_ok=True)
            self.available = os.path.isfile(os.path.join(self.base, "pids.max"))
        except (OSError, TypeError):
            self.available = False

    def prepare(self, uid: int, max_pids: int) -> list[str]:
        """Argv prefix that puts the program into uid's cgroup; [] when cgroups are unavailable."""
        if not self.available:
            return []
        path = os.path.join(self.base, str(uid))
        try:
            os.makedirs(path, exist_ok=True)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_pids))
            os.chown(os.path.join(path, "cgroup.procs"), uid, uid)
        except OSError:
            return []
        return ["/bin/sh", "-c", f'echo $$ > {path}/cgroup.procs && exec "$@"', "sh"]

    def kill_all(self, uid: int) -> None:
        if not self.available:
            return
        try:
            with open(os.path.join(self.base, str(uid), "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def kill_uid(uid: int) -> int:
    """SIGKILL every process whose real uid is `uid`; returns how many were found."""
    found = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
            if int(uid_line.split()[1]) == uid:
                found += 1
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, StopIteration, ValueError):
            continue
    return found
