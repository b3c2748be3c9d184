"""The trusted side of `function` and `script` tests; runs inside the sandbox (stdlib only).

Order of events, which is what keeps the test out of the candidate's reach:
1. the harness makes itself non-dumpable (a same-uid process cannot read its memory, fds or
   environment through /proc or ptrace);
2. it fork+execs the candidate (`sandbox_candidate.py`, a fresh interpreter holding nothing of
   this process) with stdin on /dev/null and only its two call pipes open;
3. only then does it read its request from stdin: a length-prefixed pickle of {"nonce", "spec"},
   spec {"mode": "function"|"script", "entry_points": [...], "cases": [{"args", "kwargs"}],
   "prelude": str, "test_code": str, "case_timeout_s": float};
4. it calls the candidate over the pipes and writes records to the channel fd, which the
   candidate never holds. The test's own prints are captured, never written to stdout/stderr
   (the candidate shares those pipes and could reopen them for reading).

Test code runs with the real builtins in a namespace of its own: the `prelude` (trusted code
from the task, e.g. helper functions the test calls), then `candidate` and each entry-point
name bound to a proxy. Nothing the candidate defines reaches it. Values cross only as plain
data: the candidate converts its results to builtin types and pickles them, and the harness
reads them with an unpickler that can build nothing but builtin scalars and containers.
"""
import _pickle as pickle
import builtins
import ctypes
import io
import linecache
import os
import select
import struct
import sys
import traceback

try:  # the framing and the plain-data conversion are shared with the candidate side
    from rewards.code.sandbox_candidate import MAX_MESSAGE, Frames, Timeout, plain, write
except ImportError:  # inside the sandbox: the sandbox files sit alone in one directory
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from sandbox_candidate import MAX_MESSAGE, Frames, Timeout, plain, write

CANDIDATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_candidate.py")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
SAFE_BUILTINS = {"complex", "set", "frozenset", "range", "slice", "bytearray"}
send = write  # 4-byte big-endian length + pickle, the framing of every pipe and socket here


class PlainUnpickler(pickle.Unpickler):
    """For data from the trusted side (spec, channel records): builtins only, no classes."""

    def find_class(self, module, name):
        if module == "builtins" and name in SAFE_BUILTINS:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(f"non-plain value of type {module}.{name}")


def plain_loads(data: bytes):
    return PlainUnpickler(io.BytesIO(data)).load()


class CallTimeout(BaseException):
    """The candidate did not answer in time (BaseException: a test's `except Exception` must not
    swallow it and go on talking to a candidate whose late answer is still in the pipe)."""


class CandidateGone(BaseException):
    """The candidate process died or broke the protocol."""


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
            raise EOFError("the other side closed the connection")
        buf += chunk
    return buf


class Candidate:
    """The harness's handle on the candidate. Without `fds` it fork+execs a fresh interpreter;
    with `fds` (read, write) it talks to one the fork server's template has started in this
    run's namespaces, which waits for the go-ahead sent here (/work is ready by now)."""

    def __init__(self, timeout: float, fds: tuple = ()):
        self.timeout, self.alive, self.pid = timeout, True, None
        if fds:
            self.rfd, self.wfd = fds
            try:
                os.write(self.wfd, b"g")
            except OSError:
                self.alive = False
        else:
            to_child, self.wfd = os.pipe()
            self.rfd, from_child = os.pipe()
            self.pid = os.fork()
            if self.pid == 0:
                _exec_candidate(to_child, from_child)
            os.close(to_child)
            os.close(from_child)
        self.frames = Frames(self.rfd)

    def hello(self) -> tuple:
        """("ready",), ("syntax_error", msg), ("load_error", type, msg), ("timeout",) or ("crashed",)."""
        try:
            return tuple(self._reply())
        except CallTimeout:
            return ("timeout",)
        except CandidateGone:
            return ("crashed",)

    def _reply(self):
        try:
            return plain_loads(self.frames.read(self.timeout))
        except Timeout:
            self.stop()
            raise CallTimeout("the candidate did not answer in time") from None
        except (EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError, MemoryError, RecursionError) as e:
            self.stop()
            raise CandidateGone(f"candidate process failed: {e}") from None

    def call(self, name: str, args, kwargs):
        if not self.alive:
            raise CandidateGone("the candidate process is no longer running")
        try:
            message = ("call", name, plain(list(args)), plain(dict(kwargs)))
        except (TypeError, ValueError) as e:
            raise TypeError(f"arguments passed to the candidate must be plain data: {e}") from None
        try:
            send(self.wfd, message)
        except OSError as e:
            self.stop()
            raise CandidateGone(f"candidate process failed: {e}") from None
        reply = self._reply()
        if not isinstance(reply, tuple) or not reply or reply[0] not in ("ok", "exc"):
            self.stop()
            raise CandidateGone("candidate broke the call protocol")
        if reply[0] == "ok" and len(reply) == 2:
            return reply[1]
        exc = getattr(builtins, str(reply[1]), None) if len(reply) == 3 else None
        if not (isinstance(exc, type) and issubclass(exc, Exception)):
            exc = RuntimeError
        message = f"{reply[1]}: {reply[2]}" if len(reply) == 3 else "malformed exception reply"
        try:
            err = exc(message)
        except Exception:  # noqa: BLE001 - a class whose constructor wants other arguments
            err = RuntimeError(message)
        # The candidate's own type name (differential tests compare it), whatever class was raised here.
        err.candidate_exc = str(reply[1])[:200] if len(reply) == 3 else "RuntimeError"
        raise err

    def stop(self) -> None:
        """Kill the candidate and everything it started, and reap what is ours to reap."""
        if not self.alive:
            return
        self.alive = False
        try:
            if self.pid is None:  # we are pid 1 of the run's namespace: -1 is everyone else in it
                os.kill(-1, 9)
                while os.waitpid(-1, 0):
                    pass
            else:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
        except OSError:  # ChildProcessError: nothing left to reap
            pass


def _exec_candidate(rfd: int, wfd: int) -> None:
    """Child: keep stdout/stderr and the two call pipes, nothing else; exec a fresh python."""
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        keep = {0, 1, 2, rfd, wfd}
        for fd in map(int, os.listdir("/proc/self/fd")):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.set_inheritable(rfd, True)
        os.set_inheritable(wfd, True)
        os.execve(sys.executable, [sys.executable, "-I", "-S", CANDIDATE, str(rfd), str(wfd)], ENV)
    finally:
        os._exit(127)


def run_function(spec, chan, cand: Candidate) -> None:
    for case in spec["cases"]:
        try:
            record = {"ok": True, "value": cand.call(spec["entry_points"][0], case.get("args", []),
                                                     case.get("kwargs", {}))}
        except CallTimeout:
            _write(chan, {"ok": False, "error": "timeout"})
            return  # the candidate is stuck; the remaining cases do not run
        except CandidateGone as e:
            _write(chan, {"ok": False, "error": f"crashed: {e}"})
            return
        except Exception as e:  # noqa: BLE001 - the candidate's own exception, or a non-plain value
            record = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                      "exc": getattr(e, "candidate_exc", type(e).__name__)}
        _write(chan, record)


def run_script(spec, cand: Candidate, nonce: str) -> dict:
    """Run prelude + test code + check(candidate); the result record for the channel."""
    def proxy(name):
        def call(*args, **kwargs):
            return cand.call(name, args, kwargs)
        call.__name__ = call.__qualname__ = name
        return call

    env = {"__name__": "__test__", "__builtins__": builtins}
    out = io.StringIO()
    real = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = out
    try:
        for name, source in (("prelude.py", spec.get("prelude") or ""), ("test.py", spec["test_code"])):
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # tracebacks quote the line
        if spec.get("prelude"):
            exec(compile(spec["prelude"], "prelude.py", "exec"), env)
        entries = [proxy(name) for name in spec["entry_points"]]
        env.update({name: p for name, p in zip(spec["entry_points"], entries)}, candidate=entries[0])
        exec(compile(spec["test_code"], "test.py", "exec"), env)
        if callable(env.get("check")):
            env["check"](entries[0])
        result = {"result": "passed", "nonce": nonce}
    except CallTimeout:
        result = {"result": "timeout", "error": "the candidate did not answer in time"}
    except AssertionError as e:
        result = {"result": "failed", "error": _test_traceback(e)}
    except BaseException as e:  # noqa: BLE001 - the candidate's exception escaped the test, or it crashed
        result = {"result": "runtime_error", "error": _test_traceback(e)}
    finally:
        sys.stdout, sys.stderr = real
    if out.tell():
        result["output"] = out.getvalue()[-1000:]
    result["error"] = result.get("error", "")[-2000:]
    return result


def _test_traceback(e: BaseException) -> str:
    """The traceback from the test's own frames on (the harness's are noise to the reader)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb, limit=-4))


def _write(chan, record: dict) -> None:
    chan.write(pickle.dumps(record, protocol=4))
    chan.flush()


def request_bytes(nonce: str, spec: dict) -> bytes:
    """What the harness reads on stdin (built on the host)."""
    data = pickle.dumps({"nonce": nonce, "spec": spec}, protocol=4)
    return struct.pack("!I", len(data)) + data


def main(chan_fd: int, call_fds: tuple = ()) -> None:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0, before any secret arrives
    cand = None
    try:
        spec_timeout = 10.0
        cand = Candidate(spec_timeout, call_fds)
        request = plain_loads(recv(0))  # only now: the candidate is already a separate image
        nonce, spec = request["nonce"], request["spec"]
        cand.timeout = spec.get("case_timeout_s", spec_timeout)
        chan = os.fdopen(chan_fd, "wb")
        hello = cand.hello()
        _write(chan, {"status": hello[0], "detail": list(hello[1:])})
        if hello[0] != "ready":
            return
        if spec["mode"] == "function":
            run_function(spec, chan, cand)
        else:
            result = run_script(spec, cand, nonce)
            cand.stop()  # gone before the verdict is written
            _write(chan, result)
    finally:
        if cand is not None:
            cand.stop()


if __name__ == "__main__":
    main(int(sys.argv[-1]))
