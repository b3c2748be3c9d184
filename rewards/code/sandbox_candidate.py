"""The candidate side of `function` and `script` tests (stdlib only).

The candidate starts from a clean image: either the trusted harness fork+execs
`python -I -S sandbox_candidate.py RFD WFD` before it has read its test, or (fork-server mode)
the per-slot template (sandbox_template.py), a fresh interpreter that never sees a request,
forks it straight into the run's namespaces. Either way it holds nothing but this code, its own
`solution.py` and, later, the arguments of each call. It loads the program, then answers calls.
Frames: 4-byte big-endian length + pickle. Calls arrive as ("call", name, args, kwargs);
replies are ("ready",), ("syntax_error", msg), ("load_error", type, msg), ("ok", value) or
("exc", type, msg). Values leave as plain builtin data only (`plain` below), and the harness
unpickles replies with a class-free unpickler, so a crafted reply can build nothing else.
"""
import _pickle as pickle
import builtins
import os
import select
import sys

MAX_DEPTH = 200
MAX_MESSAGE = 16 << 20


def plain(value, depth=0):
    """Subclasses of plain types (Counter, namedtuple, IntEnum, str subclasses) become their base
    type; anything else is refused. Runs here, so a subclass's own methods only touch this side."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None or type(value) in (bool, int, float, complex, str, bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    for base in (int, float, complex, str, bytes):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, dict):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (tuple, list, set, frozenset)):
        base = next(t for t in (tuple, list, frozenset, set) if isinstance(value, t))
        return base(plain(v, depth + 1) for v in value)
    raise TypeError(f"a value of type {type(value).__name__} is not plain data")


def write(fd, obj):
    data = pickle.dumps(obj, protocol=4)
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


class Timeout(Exception):
    """No frame arrived in time."""


class Frames:
    """Length-prefixed frames from a pipe, read in large chunks (one read per small message).
    Both sides use it: the harness with a timeout, the candidate without."""

    def __init__(self, fd):
        self.fd, self.buf = fd, b""

    def read(self, timeout=None):
        while True:
            if len(self.buf) >= 4:
                size = int.from_bytes(self.buf[:4], "big")
                if size > MAX_MESSAGE:
                    raise ValueError(f"message of {size} bytes is too large")
                if len(self.buf) >= 4 + size:
                    frame, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
                    return frame
            if timeout is not None and not select.select([self.fd], [], [], timeout)[0]:
                raise Timeout("no answer from the candidate in time")
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                raise EOFError("the other side closed the connection")
            self.buf += chunk


def failure(e):
    try:
        return ("exc", type(e).__name__, str(e)[:2000])
    except BaseException:  # noqa: BLE001 - a hostile __str__
        return ("exc", type(e).__name__, "")


def serve(rfd, wfd, wait_go=False):
    """Load /work's solution.py (the cwd's, when exec'd), say whether it loaded, answer calls."""
    if wait_go:  # forked by the template: the harness says when /work is ready
        if os.read(rfd, 1) != b"g":
            return
        os.chdir("/work")
    try:
        with open("solution.py", encoding="utf-8", errors="replace") as f:
            code = compile(f.read(), "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        write(wfd, ("syntax_error", f"{type(e).__name__}: {e}"))
        return
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(code, ns)
    except BaseException as e:  # noqa: BLE001 - report whatever the program raised at import
        write(wfd, ("load_error",) + failure(e)[1:])
        return
    write(wfd, ("ready",))
    frames = Frames(rfd)
    while True:
        try:
            _, name, args, kwargs = pickle.loads(frames.read())
        except EOFError:
            return  # the harness is gone
        try:
            fn = ns.get(name)
            if not callable(fn):
                raise NameError(f"name {name!r} is not defined by the program")
            reply = ("ok", plain(fn(*args, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - the program's own exception is its answer
            reply = failure(e)
        try:
            write(wfd, reply)
        except (pickle.PicklingError, RecursionError, MemoryError, ValueError) as e:
            write(wfd, failure(e))


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
