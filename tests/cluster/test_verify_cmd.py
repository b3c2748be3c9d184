"""`threefold verify` end to end: real Ray, real sandbox, JSONL in and out."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ROWS = [
    {"id": "fn-ok", "kind": "code", "program": "def f(x):\n    return x * 2\n",
     "tests": {"type": "function", "entry_point": "f", "cases": [{"args": [2], "expected": 4}, {"args": [0.5], "expected": 1.0}]}},
    {"id": "fn-half", "kind": "code", "program": "def f(x):\n    return 4\n",
     "tests": {"type": "function", "entry_point": "f", "cases": [{"args": [2], "expected": 4}, {"args": [3], "expected": 6}]}},
    "this line is not JSON",
    {"id": "io", "kind": "code", "program": "n = int(input())\nprint(n * n)\nprint()\n",
     "tests": {"type": "stdio", "cases": [{"stdin": "7\n", "stdout": "49"}, {"stdin": "3", "stdout": "  9  \n\n"}]}},
    {"id": "loop", "kind": "code", "program": "while True: pass", "limits": {"timeout_s": 1},
     "tests": {"type": "stdio", "cases": [{"stdin": "", "stdout": ""}]}},
    {"id": "syntax", "kind": "code", "program": "def f(:\n", "tests": {"type": "script", "code": "assert True", "entry_point": "f"}},
    {"id": "no-tests", "kind": "code", "program": "print(1)"},
    {"id": "math", "kind": "math", "response": "so the answer is \\boxed{\\frac{2}{4}}", "answer": "0.5"},
]


def test_verify_command(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in ROWS) + "\n")
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "verify", str(src), "-o", str(out), "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == ["fn-ok", "fn-half", None, "io", "loop", "syntax", "no-tests", "math"]
    by = {g["id"]: g for g in got if g["id"]}
    assert (by["fn-ok"]["status"], by["fn-ok"]["reward"], by["fn-ok"]["passed"]) == ("passed", 1.0, 2)
    assert (by["fn-half"]["status"], by["fn-half"]["reward"], by["fn-half"]["total"]) == ("failed", 0.5, 2)
    assert got[2]["status"] == "invalid_input" and "in.jsonl:3" in got[2]["error"]
    assert by["io"]["status"] == "passed"
    assert by["loop"]["status"] == "timeout" and by["loop"]["elapsed_s"] < 5
    assert by["syntax"]["status"] == "syntax_error"
    assert by["no-tests"]["status"] == "invalid_input" and "'tests'" in by["no-tests"]["error"]
    assert (by["math"]["status"], by["math"]["reward"]) == ("passed", 1.0)
    assert "verify:" in proc.stderr and "row" in proc.stderr  # progress bar and summary on stderr


def test_unreadable_input_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "verify", str(tmp_path / "missing.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
