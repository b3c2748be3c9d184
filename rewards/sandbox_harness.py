"""Runs inside the sandbox (stdlib only): the test side and the candidate side in two processes.

The harness process (trusted test code) forks a candidate process that executes the untrusted
program and answers calls over pipes. Values cross as pickles of plain builtin data only, so a
candidate cannot hand back an always-equal object or patch the test's builtins. The harness is
made non-dumpable, so the candidate (same uid) cannot read its memory, fds or environment; the
completion nonce arrives on stdin only after the fork, and results leave through a channel fd
the candidate never holds.

argv: harness.py SPEC_PICKLE CHANNEL_FD. spec: {"mode": "function"|"script", "entry_point",
"cases": [{"args", "kwargs"}], "test_code", "case_timeout_s"}
Only cheap C-level modules are imported (the sandbox's python starts cold every run: json,
socket and pickle's pure-Python layer would cost ~15 ms a program).
"""
import _pickle as pickle
import builtins
import ctypes
import io
import os
import select
import struct
import sys

SAFE_BUILTINS = {"complex", "set", "frozenset", "range", "slice", "bytearray"}
MAX_MESSAGE = 16 << 20


class PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"non-plain value of type {module}.{name}")


def plain_loads(data: bytes):
    return PlainUnpickler(io.BytesIO(data)).load()


class Timeout(Exception):
    pass


def send(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=4)
    data = struct.pack("!I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def recv(fd: int, timeout: float | None = None) -> bytes:
    size = struct.unpack("!I", _exact(fd, 4, timeout))[0]
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is too large")
    return _exact(fd, size, timeout)


def _exact(fd: int, n: int, timeout: float | None) -> bytes:
    buf = b""
    while len(buf) < n:
        if timeout is not None and not select.select([fd], [], [], timeout)[0]:
            raise Timeout("no answer from the candidate in time")
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("candidate process closed the connection")
        buf += chunk
    return buf


def candidate_main(rfd: int, wfd: int, chan_fd: int) -> None:
    """Child: drop the channel and stdin, run the program, then serve calls forever."""
    os.close(chan_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    src = open("solution.py", encoding="utf-8", errors="replace").read()
    try:
        code = compile(src, "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        send(wfd, ("syntax_error", f"{type(e).__name__}: {e}"))
        os._exit(0)
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(code, ns)
    except BaseException as e:  # noqa: BLE001 - report whatever the program raised at import
        send(wfd, ("load_error", type(e).__name__, str(e)[:2000]))
        os._exit(0)
    send(wfd, ("ready", sorted(k for k, v in ns.items() if callable(v) and not k.startswith("__"))))
    while True:
        _, name, args, kwargs = pickle.loads(recv(rfd))
        try:
            reply = ("ok", ns[name](*args, **kwargs))
            data = pickle.dumps(reply, protocol=4)
        except BaseException as e:  # noqa: BLE001
            reply = ("exc", type(e).__name__, str(e)[:2000])
            data = pickle.dumps(reply, protocol=4)
        data = struct.pack("!I", len(data)) + data
        while data:
            data = data[os.write(wfd, data):]


class Candidate:
    """The harness's handle on the candidate process."""

    def __init__(self, chan_fd: int, timeout: float):
        to_child, self.wfd = os.pipe()
        self.rfd, from_child = os.pipe()
        self.timeout = timeout
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.wfd)
            os.close(self.rfd)
            try:
                candidate_main(to_child, from_child, chan_fd)
            finally:
                os._exit(0)
        os.close(to_child)
        os.close(from_child)
        hello = plain_loads(recv(self.rfd, timeout))
        self.status, self.names = hello[0], hello[1] if hello[0] == "ready" else []
        self.detail = hello[1:]

    def stop(self) -> None:
        """Kill and reap the candidate, so no orphan is left for the namespace teardown."""
        try:
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        except OSError:
            pass

    def call(self, name: str, args, kwargs):
        send(self.wfd, ("call", name, list(args), dict(kwargs)))
        reply = plain_loads(recv(self.rfd, self.timeout))
        if reply[0] == "ok":
            return reply[1]
        exc = getattr(builtins, str(reply[1]), None)
        if not (isinstance(exc, type) and issubclass(exc, Exception)):
            exc = RuntimeError
        raise exc(f"{reply[1]}: {reply[2]}")


def run_function(spec, chan, cand: Candidate) -> None:
    for case in spec["cases"]:
        try:
            value = cand.call(spec["entry_point"], case.get("args", []), case.get("kwargs", {}))
            record = {"ok": True, "value": value}
        except Timeout:
            chan.write(pickle.dumps({"ok": False, "error": "timeout"}, protocol=4))
            return  # the candidate is stuck; the remaining cases do not run
        except pickle.UnpicklingError as e:
            record = {"ok": False, "error": f"TypeError: {e}"}
        except (EOFError, OSError) as e:
            chan.write(pickle.dumps({"ok": False, "error": f"crashed: {e}"}, protocol=4))
            return
        except Exception as e:  # noqa: BLE001 - the candidate's own exception
            record = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
        chan.write(pickle.dumps(record, protocol=4))
        chan.flush()


def run_script(spec, chan, cand: Candidate, nonce: str) -> None:
    def proxy(name):
        return lambda *a, **k: cand.call(name, a, k)

    env = {"__name__": "__test__", "__builtins__": builtins}
    env.update({name: proxy(name) for name in cand.names})
    exec(compile(spec["test_code"], "test.py", "exec"), env)
    if spec.get("entry_point"):
        env["check"](proxy(spec["entry_point"]))
    chan.write(f"COMPLETED {nonce}\n".encode())
    chan.flush()


def main() -> None:
    with open(sys.argv[1], "rb") as f:
        spec = plain_loads(f.read())
    chan_fd = int(sys.argv[2])
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    cand = Candidate(chan_fd, spec.get("case_timeout_s", 10.0))
    nonce = sys.stdin.readline().strip()  # only after the fork: the candidate never saw it
    chan = os.fdopen(chan_fd, "wb")
    chan.write(pickle.dumps({"status": cand.status, "detail": list(cand.detail)}, protocol=4))
    chan.flush()
    if cand.status != "ready":
        cand.stop()
        return
    try:
        if spec["mode"] == "function":
            run_function(spec, chan, cand)
        else:
            run_script(spec, chan, cand, nonce)
    finally:
        cand.stop()


if __name__ == "__main__":
    main()
