"""Fork server that runs inside a long-lived bubblewrap sandbox (stdlib only).

bwrap gives it a user namespace (uid 0 there, the slot's unprivileged uid outside), no network,
a read-only root with /usr and /etc only, and a cleared environment. Per program it forks a
namespace holder; that takes fresh mount, pid, network and ipc namespaces and forks the run's
pid 1, which mounts fresh size-capped /work, /tmp and /dev/shm (the rest of /dev read-only) and
its own /proc, applies rlimits, drops every capability (no_new_privs), and then either
- execs python on the program (`exec` mode), or
- runs the trusted test harness already imported here (`harness` mode, no interpreter start-up
  for the trusted side), while the holder asks the slot's template (sandbox_template.py, a
  fresh interpreter that never sees a request) for a candidate process inside the same
  namespaces.
No untrusted code runs in a process forked from here: this process's memory has held earlier
requests. Killing the run's pid 1 takes its whole namespace down.

Protocol on the socket fd (argv[1]): 4-byte length + pickle. Host sends ("run", request), then
("stdin", bytes) — read only after the fork, so no forked child holds it in memory — and gets
("done", result).
"""
import _pickle as pickle
import gc
import marshal
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # holds only the sandbox files
import sandbox_harness  # noqa: E402  (preloaded: forked children run it warm)
from sandbox_template import check, close_all_but, drop_privileges, libc, set_limits  # noqa: E402

# Modules test code often imports, loaded once here for the trusted side (never the candidate's).
for _name in ("math", "random", "copy", "collections", "itertools", "functools", "re", "string", "typing", "heapq"):
    __import__(_name)

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x20000000, 0x40000000, 0x08000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
# statvfs flag → mount flag, for the flags a remount inside a user namespace must keep
KEEP_FLAGS = ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, 1024), (2048, 2048), (4096, 1 << 21))
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
CHANNEL_FD = 3
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
template = None  # (socket, pid) of this slot's candidate template


send = sandbox_harness.send


def recv(fd: int):
    return pickle.loads(sandbox_harness.recv(fd))


def start_template() -> tuple:
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            close_all_but({0, 1, 2, theirs.fileno()})
            os.set_inheritable(theirs.fileno(), True)
            os.execve(sys.executable, [sys.executable, "-I", "-S", f"{HERE}/sandbox_template.py",
                                       str(theirs.fileno())], ENV)
        except BaseException:  # noqa: BLE001
            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(127)
    theirs.close()
    return ours, pid


def restart_template() -> None:
    global template
    if template is not None:
        template[0].close()
        try:
            os.kill(template[1], signal.SIGKILL)
            os.waitpid(template[1], 0)
        except OSError:
            pass
    template = start_template()


def ask_template(req: dict, call: dict, pipes: dict, seq: int, ns: list) -> bool:
    """Holder side: have the template put a candidate into these namespaces; True when it did."""
    try:
        fds = ns + [call["to_c"][0], call["from_c"][1], pipes["stdout"][1], pipes["stderr"][1]]
        data = marshal.dumps((seq, req["limits"]))
        socket.send_fds(template[0], [len(data).to_bytes(4, "big") + data], fds)
        while True:  # a reply meant for an earlier, killed holder may still be queued
            got, answer = marshal.loads(sandbox_harness.recv(template[0].fileno(), 10.0))
            if got == seq:
                if answer != "ok":
                    os.write(2, f"sandbox: {answer}\n".encode())
                return answer == "ok"
    except (OSError, EOFError, ValueError, sandbox_harness.Timeout) as e:
        os.write(2, f"sandbox: candidate template failed: {e}\n".encode())
        return False
    finally:
        for fd in ns:
            os.close(fd)


def program_main(req: dict, pipes: dict, call: dict) -> None:
    """Pid 1 of the program's namespaces; never returns."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if req["mode"] == "harness":
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    size = f"size={req['tmpfs_bytes']},mode=1777".encode()
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    for target in (b"/work", b"/tmp", b"/dev/shm"):
        check(libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, size), "mount tmpfs")
    check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV, None), "mount proc")
    # /dev is shared by every program of this slot: read-only (its device nodes still work).
    kept = sum(ms for st, ms in KEEP_FLAGS if os.statvfs("/dev").f_flag & st)
    check(libc.mount(None, b"/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept, None), "remount /dev read-only")
    os.chdir("/work")
    for name, content in req["files"].items():
        with open(name, "wb") as f:
            f.write(content)
    os.dup2(pipes["stdin"][0], 0)
    os.dup2(pipes["stdout"][1], 1)
    os.dup2(pipes["stderr"][1], 2)
    os.dup2(pipes["channel"][1], CHANNEL_FD)
    mine = (call["from_c"][0], call["to_c"][1]) if call else ()
    close_all_but({0, 1, 2, CHANNEL_FD, *mine})  # the host socket, the template's, every other pipe end
    set_limits(req["limits"])
    drop_privileges()
    os.setsid()
    if req["mode"] == "harness":
        code = 0
        try:
            sandbox_harness.main(CHANNEL_FD, mine)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:  # noqa: BLE001 - the harness itself crashed: say why on stderr
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    os.execve(req["python"], [req["python"], *req["argv"]], ENV)


def spawn(req: dict, pipes: dict, call: dict, status_w: int, seq: int) -> int:
    """Fork the namespace holder; it forks the program as pid 1 and reports (pid, candidate ok),
    then the wait status."""
    pid = os.fork()
    if pid:
        return pid
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
        # pid 1 soon mounts its own /proc, where this process has no /proc/self: hold on to ours.
        # (pid_for_children only opens once the namespace has its pid 1.)
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        inner = os.fork()
        if inner == 0:
            os.close(status_w)
            program_main(req, pipes, call)
        ns = [os.open(f"self/ns/{n}", os.O_RDONLY, dir_fd=proc) for n in ("net", "ipc", "pid_for_children", "mnt")] \
            if call else []
        os.close(proc)
        ok = ask_template(req, call, pipes, seq, ns) if call else True
        if not ok:
            os.kill(inner, signal.SIGKILL)
        for r, w in [*pipes.values(), *call.values()]:  # else the program would never see EOF on its stdin
            os.close(r)
            os.close(w)
        os.write(status_w, struct.pack("!ii", inner, ok))
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


def run_one(sock: int, req: dict, seq: int) -> dict:
    pipes = {k: os.pipe() for k in ("stdin", "stdout", "stderr", "channel")}
    call = {k: os.pipe() for k in ("to_c", "from_c")} if req["mode"] == "harness" else {}
    status_r, status_w = os.pipe()
    holder = spawn(req, pipes, call, status_w, seq)
    os.close(status_w)
    for k, (r, w) in pipes.items():
        os.close(r if k == "stdin" else w)
    for r, w in call.values():
        os.close(r)
        os.close(w)
    pipes = {k: ((None, w) if k == "stdin" else (r, None)) for k, (r, w) in pipes.items()}
    stdin = recv(sock)[1]  # only now: the program was forked without it
    out = pump(req, pipes, stdin, status_r)
    try:
        head = sandbox_harness._exact(status_r, 8, 15.0)
    except (EOFError, sandbox_harness.Timeout):  # the holder died before reporting
        head = b""
    inner, cand_ok = struct.unpack("!ii", head) if len(head) == 8 else (0, 1)
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
    if not cand_ok:
        out["sandbox_failure"] = "the candidate template could not start the program"
        restart_template()
    return out


def main() -> None:
    sock = int(sys.argv[1])
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # its memory holds earlier requests
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    restart_template()
    gc.freeze()  # forked children then leave these objects' pages shared (no GC writes to them)
    send(sock, ("ready", os.getpid()))
    seq = 0
    while True:
        try:
            kind, req = recv(sock)
        except (EOFError, OSError):
            return
        if kind == "run":
            seq += 1
            send(sock, ("done", run_one(sock, req, seq)))


if __name__ == "__main__":
    main()
