"""Per-slot template for candidate processes, inside the fork-server sandbox (stdlib only).

The zygote fork+execs this file once per slot, so the template is a fresh interpreter. It
preloads common modules and then only ever receives control messages — a sequence number, the
run's limits, and file descriptors (the program's namespaces and the candidate's pipes) — never
a program, a test or a result. For each `function`/`script` run the zygote's namespace holder
asks it for a candidate: the template steps into the run's network, ipc, pid and mount
namespaces, forks the candidate there and steps back. The candidate drops every capability,
applies the limits, waits for the harness's go-ahead and loads /work/solution.py. A candidate therefore starts
from a clean image (the same guarantee as an exec) without paying an interpreter start-up.

Control frames (4-byte length + marshal, fds as SCM_RIGHTS): in (seq, limits) with fds
[net, ipc, pid_for_children, mnt, call_r, call_w, stdout, stderr]; out (seq, "ok" | error).
"""
import ctypes
import gc
import marshal
import os
import random
import resource
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # holds only the sandbox files
import sandbox_candidate  # noqa: E402

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x40000000, 0x08000000
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 24, 38
# What candidates commonly import, loaded once: a candidate's `import typing` is then free.
PRELOAD = ("typing", "math", "collections", "itertools", "functools", "re", "string", "heapq", "bisect", "copy",
           "fractions", "statistics", "decimal", "datetime", "json", "hashlib")
NAMESPACES = (CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNS)  # the mount namespace last: it moves / and cwd


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def drop_privileges() -> None:
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable × 2 words: all zero
    check(libc.capset(header, data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def set_limits(lim: dict) -> None:
    for res, value in ((resource.RLIMIT_AS, lim["memory_mb"] << 20), (resource.RLIMIT_CPU, lim["cpu_s"]),
                       (resource.RLIMIT_FSIZE, lim["file_size_mb"] << 20), (resource.RLIMIT_NOFILE, lim["open_files"]),
                       (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def close_all_but(keep: set) -> None:
    low = 0
    for fd in sorted(keep) + [1 << 16]:
        if fd > low:  # closerange(n, n) closes everything on this Python (close_range(n, UINT_MAX))
            os.closerange(low, fd)
        low = fd + 1


def candidate(fds: list, limits: dict) -> None:
    """Forked inside the run's namespaces; never returns."""
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        call_r, call_w, out, err = fds[4:]
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        close_all_but({0, 1, 2, call_r, call_w})
        set_limits(limits)
        os.setsid()
        drop_privileges()
        random.seed()  # else every candidate would replay the template's random stream
        sys.argv = ["solution.py"]
        sandbox_candidate.serve(call_r, call_w, wait_go=True)
    finally:
        os._exit(0)


def spawn(fds: list, limits: dict, home: list) -> str:
    """Step into the run's namespaces, fork the candidate there, step back home; "ok" or why not."""
    try:
        for fd, kind in zip(fds[:4], NAMESPACES):
            check(libc.setns(fd, kind), "setns")
        if os.fork() == 0:
            candidate(fds, limits)
        return "ok"
    except OSError as e:
        return f"candidate spawn failed: {e}"
    finally:  # (pid_for_children cannot go back, the host owns our own pid namespace: the next
        # spawn replaces it, and nothing else is ever forked here)
        for fd, kind in zip(home, NAMESPACES):
            if kind != CLONE_NEWPID and libc.setns(fd, kind) != 0:
                os.write(2, f"template: cannot return to namespace {kind:#x}: {os.strerror(ctypes.get_errno())}\n".encode())
                os._exit(3)  # stranded in a run's namespaces: die, the zygote starts a new template


def reap(*_) -> None:
    """SIGCHLD: reap finished candidates at once — the run's pid 1 cannot exit until they are."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    home = [os.open(f"/proc/self/ns/{n}", os.O_RDONLY) for n in ("net", "ipc", "pid", "mnt")]
    signal.signal(signal.SIGCHLD, reap)
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # forked candidates then leave these objects' pages shared (no GC writes to them)
    while True:
        try:
            head, fds, _, _ = socket.recv_fds(sock, 4, 8)
            if not head:
                return  # the zygote is gone
            data = sock.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL)
            seq, limits = marshal.loads(data)
        except (OSError, EOFError, ValueError):
            return
        try:
            answer = spawn(fds, limits, home) if len(fds) == 8 else "expected 8 descriptors"
        finally:
            for fd in fds:
                os.close(fd)
        reply = marshal.dumps((seq, answer))
        sock.sendall(len(reply).to_bytes(4, "big") + reply)


if __name__ == "__main__":
    main()
