"""Processes of the local Ray clusters the e2e tests start with `ray start` (submit, multi-node):
free ports for their nodes, and the processes to kill when a test is done, found by a marker in
their command line (the cluster's temp dir) or by session. Never `ray stop`: it would stop every
cluster on the machine."""
from __future__ import annotations

import os
from pathlib import Path


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pids_matching(marker: str, sessions: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """Processes whose command line names `marker`, or that are in one of `sessions` (process session ids)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
                continue
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[3]) in sessions:  # field 6: the session id
                out.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def kill(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
