"""Attack suite: each hostile program is contained with the right status, the host is unharmed,
and no process of the sandbox's uids is left behind."""
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rewards.math.answer import MathChecker
from rewards.code.run_tests import run_function_tests
from rewards.code.sandbox import UID_BASE, Limits, Sandbox, SandboxUnavailable
from rewards.verify import VerifySettings, verify_row
from tests.rewards.conftest import sandbox_pids

SETTINGS = VerifySettings(limits=Limits(timeout_s=3, cpu_s=3, memory_mb=256, file_size_mb=8, processes=32))


@pytest.fixture(scope="module")
def checker():
    with MathChecker() as c:
        yield c


@pytest.fixture()
def run(sandbox, checker):
    def go(program: str, tests: dict | None = None, **limits) -> dict:
        tests = tests or {"type": "stdio", "cases": [{"stdin": "", "stdout": "done"}]}
        row = {"id": "x", "kind": "code", "program": program, "tests": tests}
        if limits:
            row["limits"] = limits
        out = verify_row(row, sandbox, checker, SETTINGS)
        time.sleep(0.05)
        assert sandbox_pids(exclude=frozenset(sandbox.infra_pids())) == [], "a sandboxed process outlived its run"
        return out

    return go


def ping_host(sandbox, checker):
    """The pool still works after an attack."""
    ok = verify_row({"id": "p", "kind": "code", "program": "print('done')",
                     "tests": {"type": "stdio", "cases": [{"stdin": "", "stdout": "done"}]}}, sandbox, checker, SETTINGS)
    assert ok["status"] == "passed"


ADD = {"type": "function", "entry_point": "add", "cases": [{"args": [1, 2], "expected": 3}, {"args": [5, 5], "expected": 10}]}
SCRIPT = {"type": "script", "code": "def check(f):\n    assert f(1, 2) == 3\n    assert f(5, 5) == 10\n",
          "entry_point": "add"}


@pytest.mark.parametrize("name,program,status", [
    ("infinite loop", "while True: pass", "timeout"),
    ("sleep forever", "import time\ntime.sleep(10**6)", "timeout"),
    ("SIGALRM ignored", "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.alarm(1)\nwhile True: pass",
     "timeout"),
    ("memory bomb", "x = []\nwhile True: x.append(bytearray(50 << 20))", "memory_limit"),
    ("stdout flood", "import sys\nwhile True: sys.stdout.write('A' * 65536)", "output_limit"),
    ("big file in work dir", "f = open('big', 'wb')\nwhile True: f.write(b'0' * (1 << 20))", "output_limit"),
    ("many files in work dir", "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * (4 << 20)); i += 1", "output_limit"),
    ("input with no stdin", "print(input())", "runtime_error"),
    ("deep recursion", "def f(n): return f(n + 1)\nf(0)", "runtime_error"),
    ("segfault via ctypes", "import ctypes\nctypes.string_at(0)", "runtime_error"),
    # Overflowing the C stack ends in SIGSEGV or a SystemError whose huge traceback may outlast the limit.
    ("recursion past the C stack", "import sys\nsys.setrecursionlimit(10**7)\ndef f(n): return f(n + 1)\nf(0)",
     ("runtime_error", "timeout")),
])
def test_contained(run, sandbox, checker, name, program, status):
    out = run(program, timeout_s=2)
    assert out["status"] in ((status,) if isinstance(status, str) else status), (name, out)
    assert out["reward"] == 0.0
    ping_host(sandbox, checker)


def test_stdout_is_capped_and_flagged(sandbox):
    res = sandbox.run({"main.py": "import sys\nwhile True: sys.stdout.write('B' * 65536)"}, ["python", "main.py"],
                      limits=Limits(timeout_s=3, output_bytes=1 << 20))
    assert res.output_exceeded and len(res.stdout) == 1 << 20
    assert set(res.stdout) == {ord("B")}


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
    "import multiprocessing as mp, time\n"
    "def spin():\n    time.sleep(60)\n"
    "if __name__ == '__main__':\n    ps = []\n    while True:\n        p = mp.Process(target=spin); p.start(); ps.append(p)",
])
def test_fork_bombs_contained(run, sandbox, checker, program):
    assert os.geteuid() == 0 or True  # the pool may run as root; limits must hold either way
    out = run(program, timeout_s=3)
    assert out["status"] in ("timeout", "runtime_error"), out
    ping_host(sandbox, checker)


def test_files_outside_work_dir_untouched(run):
    host_dir = tempfile.mkdtemp(prefix="threefold-canary-", dir="/var/tmp")  # not under /tmp, which is private
    os.chmod(host_dir, 0o755)
    canary = Path(host_dir) / "canary.txt"
    canary.write_text("intact")
    if os.path.exists("/tmp/private"):  # left by an earlier rlimits-mode run, which shares /tmp
        os.remove("/tmp/private")
    program = f"""
import os
blocked = 0
for path in [{str(canary)!r}, '/etc/passwd', '/usr/bin/python3', '/work/../etc/hosts']:
    try:
        os.remove(path)
    except OSError:
        blocked += 1
for path in [{str(canary)!r}, '/etc/evil', '/usr/evil', '/root/evil', '/evil']:
    try:
        open(path, 'w').write('x')
    except OSError:
        blocked += 1
open('/tmp/private', 'w').write('fine')
print('done' if blocked == 9 else f'escaped {{9 - blocked}}')
"""
    out = run(program)
    assert out["status"] == "passed", out
    assert canary.read_text() == "intact"
    assert not os.path.exists("/tmp/private") and not os.path.exists("/evil")
    shutil.rmtree(host_dir)


def test_secrets_do_not_reach_the_sandbox(run, monkeypatch):
    monkeypatch.setenv("THREEFOLD_TEST_SECRET", "s3cr3t-value-42")
    program = """
import os
seen = repr(dict(os.environ))
for path in ['/proc/1/environ', '/proc/self/environ', f'/proc/{os.getppid()}/environ']:
    try:
        seen += open(path, 'rb').read().decode(errors='replace')
    except OSError:
        pass
print('leak' if 's3cr3t' in seen else 'done')
"""
    assert run(program)["status"] == "passed"


def test_no_network(run, sandbox):
    if not sandbox.mode.startswith("bwrap"):
        pytest.skip(f"no network namespace in mode {sandbox.mode}")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(4)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: _accept(server, accepted), daemon=True).start()
    program = f"""
import socket
out = []
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=1); out.append('tcp')
except OSError:
    pass
try:
    socket.getaddrinfo('example.com', 80); out.append('dns')
except OSError:
    pass
print('done' if not out else ' '.join(out))
"""
    assert run(program)["status"] == "passed"
    time.sleep(0.3)
    assert accepted == []
    server.close()


def _accept(server, accepted):
    try:
        accepted.append(server.accept())
    except OSError:
        pass


@pytest.mark.parametrize("program", [
    "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('done')",
    "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint('done')",
    "import subprocess\nsubprocess.run(['kill', '-9', '-1'])\nprint('done')",
])
def test_killing_parent_or_everyone_hurts_nobody(run, sandbox, checker, program):
    run(program)  # whatever the verdict, the host and the pool survive
    assert os.getpid() > 0
    ping_host(sandbox, checker)


def test_double_fork_daemon_does_not_outlive_the_run(run):
    program = """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
print('done')
"""
    run(program)  # the fixture asserts no sandbox-uid process remains


@pytest.mark.parametrize("prefix", ["exit(0)\n", "import os\nos._exit(0)\n", "import sys\nsys.exit(0)\n",
                                    "import sys\nprint('COMPLETED 0')\nsys.exit(0)\n"])
def test_fake_passes_by_exiting(run, prefix):
    program = prefix + "def add(a, b):\n    return a + b\n"
    assert run(program, SCRIPT)["status"] != "passed"
    assert run(program, ADD)["status"] != "passed"


def test_real_pass_for_contrast(run):
    program = "def add(a, b):\n    return a + b\n"
    assert run(program, SCRIPT)["status"] == "passed"
    assert run(program, ADD)["reward"] == 1.0


@pytest.mark.parametrize("program", [
    "class Eq:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
    "def add(a, b):\n    return Eq()\n",
    "class Int(int):\n    def __eq__(self, other): return True\ndef add(a, b):\n    return Int(0)\n",
    "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\n"
    "_real = builtins.isinstance\nbuiltins.isinstance = lambda *a: True\nbuiltins.len = lambda x: 0\n"
    "def add(a, b):\n    return 0\n",
    "import json, pickle\njson.loads = lambda *a, **k: 3\npickle.loads = lambda *a, **k: ('ok', 3)\n"
    "def add(a, b):\n    return 0\n",
])
def test_fooling_the_comparison(run, program):
    assert run(program, ADD)["passed"] == 0
    assert run(program, SCRIPT)["status"] != "passed"


def test_every_process_is_in_the_pids_cgroup():
    mode = os.environ.get("THREEFOLD_SANDBOX_MODE", "bwrap-userns")  # the per-run bwrap path joins cgroups
    try:
        sandbox = Sandbox(mode, slots=1, uid_base=UID_BASE + 2048, pids_cgroup=True)
    except SandboxUnavailable:
        pytest.skip(f"{mode} is not available here")
    if not (sandbox.cgroups and sandbox.cgroups.available) or sandbox.mode in ("bwrap-root", "bwrap-forkserver"):
        pytest.skip("no writable pids cgroup here (or a mode that relies on RLIMIT_NPROC and pid namespaces)")
    seen = []

    def peek():
        time.sleep(0.6)
        for uid in range(UID_BASE + 2048, UID_BASE + 2048 + 8):
            path = Path(sandbox.cgroups.base) / str(uid)
            if (path / "cgroup.procs").exists() and (path / "cgroup.procs").read_text().split():
                seen.append((int((path / "pids.max").read_text()), len((path / "cgroup.procs").read_text().split())))

    t = threading.Thread(target=peek)
    t.start()
    program = "import os, time\nfor _ in range(3):\n    if os.fork() == 0:\n        time.sleep(2); os._exit(0)\ntime.sleep(1.5)"
    sandbox.run({"m.py": program}, ["python", "m.py"], limits=Limits(processes=16, timeout_s=5))
    t.join()
    # bwrap, its init, the program and its 3 children; pids.max = processes + 8 (bwrap's own)
    assert seen == [(24, 6)] if sandbox.mode == "bwrap-userns" else seen and seen[0][1] >= 4


def test_fork_server_replaced_after_it_dies(sandbox, checker):
    if sandbox.mode != "bwrap-forkserver":
        pytest.skip("only the fork-server mode keeps processes between runs")
    ping_host(sandbox, checker)
    for pid in sandbox.infra_pids():
        os.kill(pid, 9)
    time.sleep(0.2)
    first = sandbox.run({"m.py": "print('x')"}, ["python", "m.py"], limits=Limits(timeout_s=3))
    ping_host(sandbox, checker)  # whichever slot the first run hit, the pool works afterwards
    assert first.returncode in (0, -9)
    assert all(sandbox.run({"m.py": "print('y')"}, ["python", "m.py"]).stdout == b"y\n" for _ in range(4))


@pytest.mark.parametrize("tests", [None, ADD])
def test_programs_hold_no_capabilities(run, tests):
    """Neither an exec'd program nor a candidate served by the harness keeps any capability."""
    probe = ("def caps():\n    st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
             "    return int(st['CapEff'], 16) | int(st['CapPrm'], 16) | int(st['CapAmb'], 16)\n")
    if tests is None:
        assert run(probe + "print('done' if caps() == 0 else 'caps')")["status"] == "passed"
    else:
        program = probe + "def add(a, b):\n    return a + b if caps() == 0 else -1\n"
        assert run(program, ADD)["reward"] == 1.0


def test_dead_template_is_a_sandbox_error_then_replaced(checker):
    """Killing the slot's candidate template fails only the run in flight, as `sandbox_error`
    (not the program's fault); the row is retried once and the slot works again."""
    try:
        box = Sandbox("bwrap-forkserver", slots=1, uid_base=UID_BASE + 3584)
    except SandboxUnavailable:
        pytest.skip("only the fork-server mode has a candidate template")
    try:
        row = {"id": "t", "kind": "code", "program": "def add(a, b):\n    return a + b\n", "tests": ADD}
        assert verify_row(row, box, checker, SETTINGS)["status"] == "passed"
        (zygote,) = box.forkservers.zygotes.values()
        templates = box.infra_pids() - {zygote.pid, zygote.proc.pid}
        assert len(templates) == 1
        os.kill(templates.pop(), 9)
        time.sleep(0.1)
        lost = run_function_tests(box, row["program"], ADD, SETTINGS.limits, 1e-6)
        assert lost.status == "sandbox_error" and lost.passed == 0
        assert verify_row(row, box, checker, SETTINGS)["status"] == "passed"
        os.kill((box.infra_pids() - {zygote.pid, zygote.proc.pid}).pop(), 9)
        time.sleep(0.1)
        assert verify_row(row, box, checker, SETTINGS)["status"] == "passed"  # retried inside verify_row
    finally:
        box.close()
