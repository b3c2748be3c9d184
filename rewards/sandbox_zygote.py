"""Fork server that runs inside a long-lived bubblewrap sandbox (stdlib only).

bwrap gives it a user namespace (uid 0 there, the slot's unprivileged uid outside), no network,
a read-only root with /usr and /etc only, and a cleared environment. Per program it forks; the
child takes fresh mount, pid and network namespaces, fresh size-capped /work and /tmp, its own
/proc, rlimits, no capabilities and no_new_privs, and then either runs the test harness already
imported here (no interpreter start-up per program) or execs python on the program. Killing the
child's pid-1 takes its whole namespace down, so nothing outlives a run.

Protocol on the socket fd (argv[1]): 4-byte length + pickle. Host sends ("run", request), then
("stdin", bytes) — read only after the fork, so no child ever holds it in memory — and gets
("done", result).
"""
import _pickle as pickle
import ctypes
import os
import select
import signal
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_harness  # noqa: E402  (preloaded: forked children run it warm)

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x40000000, 0x08000000
MS_REC, MS_PRIVATE, MS_NOSUID, MS_NODEV = 16384, 1 << 18, 2, 4
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
CHANNEL_FD = 3
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


send = sandbox_harness.send


def recv(fd: int):
    return pickle.loads(sandbox_harness.recv(fd))


def drop_privileges() -> None:
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable × 2 words: all zero
    check(libc.capset(header, data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def set_limits(lim: dict) -> None:
    import resource

    for res, value in ((resource.RLIMIT_AS, lim["memory_mb"] << 20), (resource.RLIMIT_CPU, lim["cpu_s"]),
                       (resource.RLIMIT_FSIZE, lim["file_size_mb"] << 20), (resource.RLIMIT_NOFILE, lim["open_files"]),
                       (resource.RLIMIT_NPROC, lim["processes"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def program_main(req: dict, pipes: dict) -> None:
    """Pid 1 of the program's namespaces; never returns."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    size = f"size={req['tmpfs_bytes']},mode=1777".encode()
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    for target in (b"/work", b"/tmp"):
        check(libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, size), "mount tmpfs")
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None), "mount proc")
    os.chdir("/work")
    for name, content in req["files"].items():
        with open(name, "wb") as f:
            f.write(content)
    os.dup2(pipes["stdin"][0], 0)
    os.dup2(pipes["stdout"][1], 1)
    os.dup2(pipes["stderr"][1], 2)
    os.dup2(pipes["channel"][1], CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, 4096)  # the host socket and every other pipe end
    set_limits(req["limits"])
    drop_privileges()
    os.setsid()
    if req["mode"] == "harness":
        code = 0
        try:
            sys.argv = ["harness.py", "spec.pkl", str(CHANNEL_FD)]
            sandbox_harness.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the test failed or crashed: say why on stderr
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.execve(req["python"], [req["python"], *req["argv"]], ENV)


def spawn(req: dict, pipes: dict, status_w: int) -> int:
    """Fork the namespace holder; it forks the program as pid 1 and reports (pid, wait status)."""
    pid = os.fork()
    if pid:
        return pid
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
        inner = os.fork()
        if inner == 0:
            os.close(status_w)
            program_main(req, pipes)
        for r, w in pipes.values():  # else the program would never see EOF on its stdin
            os.close(r)
            os.close(w)
        os.write(status_w, struct.pack("!i", inner))
        _, status = os.waitpid(inner, 0)
        os.write(status_w, struct.pack("!i", status))
    except BaseException:  # noqa: BLE001
        os.write(2, traceback.format_exc().encode())
    os._exit(0)


def pump(req: dict, pipes: dict, stdin: bytes, status_r: int) -> dict:
    """Feed stdin, collect capped outputs, enforce the deadline; returns the run's result."""
    lim, start = req["limits"], time.perf_counter()
    deadline, cap = start + lim["timeout_s"], lim["output_bytes"]
    reads = {pipes[k][0]: k for k in ("stdout", "stderr", "channel")}
    bufs = {k: bytearray() for k in reads.values()}
    w = pipes["stdin"][1]
    timed_out = exceeded = False
    while reads:
        left = deadline - time.perf_counter()
        if left <= 0:
            timed_out = True
            break
        r, wr, _ = select.select(list(reads), [w] if w is not None else [], [], min(left, 0.5))
        if wr:
            try:
                stdin = stdin[os.write(w, stdin[:65536]):]
            except OSError:
                stdin = b""
            if not stdin:
                os.close(w)
                w = None
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                del reads[fd]
                continue
            buf = bufs[reads[fd]]
            buf += chunk[: cap + 1 - len(buf)]
            if len(buf) > cap:
                del buf[cap:]
                exceeded = True
        if exceeded:
            break
    if w is not None:
        os.close(w)
    return {"stdout": bytes(bufs["stdout"]), "stderr": bytes(bufs["stderr"]), "channel": bytes(bufs["channel"]),
            "timed_out": timed_out, "output_exceeded": exceeded, "start": start}


def run_one(sock: int, req: dict) -> dict:
    pipes = {k: os.pipe() for k in ("stdin", "stdout", "stderr", "channel")}
    status_r, status_w = os.pipe()
    holder = spawn(req, pipes, status_w)
    os.close(status_w)
    for k, (r, w) in pipes.items():
        os.close(r if k == "stdin" else w)
    pipes = {k: ((None, w) if k == "stdin" else (r, None)) for k, (r, w) in pipes.items()}
    stdin = recv(sock)[1]  # only now: the program was forked without it
    out = pump(req, pipes, stdin, status_r)
    head = sandbox_harness._exact(status_r, 4, 5.0) if select.select([status_r], [], [], 5.0)[0] else b""
    inner = struct.unpack("!i", head)[0] if len(head) == 4 else 0
    if (out["timed_out"] or out["output_exceeded"]) and inner > 0:
        os.kill(inner, signal.SIGKILL)
    try:
        status = struct.unpack("!i", sandbox_harness._exact(status_r, 4, max(1.0, req["limits"]["timeout_s"])))[0]
        code = os.waitstatus_to_exitcode(status)
    except Exception:  # noqa: BLE001 - the holder died or hung: kill the program's namespace
        if inner > 0:
            os.kill(inner, signal.SIGKILL)
        code = -signal.SIGKILL
    os.waitpid(holder, 0)
    for k, (r, _) in pipes.items():
        if r is not None:
            os.close(r)
    os.close(status_r)
    out["returncode"] = code
    out["elapsed_s"] = time.perf_counter() - out.pop("start")
    return out


def main() -> None:
    sock = int(sys.argv[1])
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    send(sock, ("ready", os.getpid()))
    while True:
        try:
            kind, req = recv(sock)
        except (EOFError, OSError):
            return
        if kind == "run":
            send(sock, ("done", run_one(sock, req)))


if __name__ == "__main__":
    main()
