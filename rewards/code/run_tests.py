"""Code tests against a Sandbox: `function`, `stdio` and `script` (`differential` is in
differential.py); verdicts are decided here, outside the candidate's reach (expected values
never enter the sandbox)."""
from __future__ import annotations

import io
import math
import secrets
from dataclasses import dataclass, field

from rewards.code.sandbox import Limits, RunResult, Sandbox
from rewards.code.sandbox_harness import PlainUnpickler, request_bytes

# When several cases disagree, the row's status is the most severe one.
SEVERITY = ("sandbox_error", "syntax_error", "memory_limit", "output_limit", "timeout", "runtime_error", "failed",
            "passed")


@dataclass
class CodeVerdict:
    status: str
    passed: int
    total: int
    cases: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str = ""  # why, for a row-level status such as `invalid_input` (a broken differential reference)

    def reward(self, all_or_nothing: bool) -> float:
        if self.total == 0:
            return 0.0
        if all_or_nothing:
            return 1.0 if self.passed == self.total else 0.0
        return self.passed / self.total


def values_equal(actual, expected, rel_tol: float = 1e-6) -> bool:
    """Strict structural equality on plain data; floats compare with a relative tolerance.
    JSON has no tuples, so list and tuple compare equal; bool never equals a number."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if isinstance(expected, float) or isinstance(actual, float):
            if math.isnan(expected) or math.isnan(actual):
                return math.isnan(expected) and math.isnan(actual)
            return math.isclose(actual, expected, rel_tol=rel_tol, abs_tol=rel_tol * 1e-3)
        return actual == expected
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(values_equal(a, e, rel_tol) for a, e in zip(actual, expected))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return actual.keys() == expected.keys() and all(values_equal(actual[k], expected[k], rel_tol) for k in expected)
    return type(actual) is type(expected) and actual == expected


def normalise_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return [" ".join(line.split()) for line in lines]


def failure_status(run: RunResult) -> str | None:
    """Status from how the process ended, or None if it ended on its own terms."""
    err = run.stderr[-4000:].decode(errors="replace")
    if run.sandbox_failed:
        return "sandbox_error"
    if run.output_exceeded:
        return "output_limit"
    if "MemoryError" in err:
        return "memory_limit"
    if run.timed_out or run.signal in (24,):  # SIGXCPU: CPU seconds used up
        return "timeout"
    if run.signal == 25 or "File too large" in err or "No space left" in err:  # SIGXFSZ
        return "output_limit"
    return None


def _read_records(channel: bytes) -> list[dict]:
    buf = io.BytesIO(channel)
    records = []
    while buf.tell() < len(channel):
        try:
            records.append(PlainUnpickler(buf).load())
        except Exception:  # noqa: BLE001 - a torn write when the run was killed
            break
    return records


def entry_points(tests: dict) -> list[str]:
    names = tests.get("entry_point")
    return [names] if isinstance(names, str) else list(names or [])


def _harness_run(sandbox: Sandbox, program: str, spec: dict, limits: Limits, nonce: str = "") -> tuple:
    run = sandbox.run_harness(program, request_bytes(nonce, spec), limits)
    return run, _read_records(run.channel)


def _load_failure(records: list, run: RunResult) -> str | None:
    """None when the candidate loaded; else the row's status."""
    if not records:
        return failure_status(run) or ("runtime_error" if run.returncode else "sandbox_error")
    head = records[0]
    status, detail = head.get("status"), head.get("detail") or []
    if status == "ready":
        return None
    if status == "syntax_error":
        return "syntax_error"
    if status == "load_error" and detail and detail[0] == "MemoryError":
        return "memory_limit"
    return failure_status(run) or ("timeout" if status == "timeout" else "runtime_error")


def run_function_tests(sandbox: Sandbox, program: str, tests: dict, limits: Limits, rel_tol: float) -> CodeVerdict:
    cases = tests["cases"]
    spec = {"mode": "function", "entry_points": entry_points(tests), "case_timeout_s": limits.timeout_s,
            "cases": [{"args": c.get("args", []), "kwargs": c.get("kwargs", {})} for c in cases]}
    run, records = _harness_run(sandbox, program, spec, limits)
    bad = _load_failure(records, run)
    if bad:
        detail = (records[0].get("detail") if records else None) or run.stderr[-1000:].decode(errors="replace")
        return CodeVerdict(bad, 0, len(cases), [{"status": bad, "error": str(detail)[:1000]}] * len(cases), run.elapsed_s)
    out = []
    for i, case in enumerate(cases):
        rec = records[1 + i] if 1 + i < len(records) else None
        if rec is None:
            out.append({"status": failure_status(run) or ("timeout" if run.timed_out else "runtime_error")})
        elif not rec["ok"]:
            out.append({"status": "timeout" if rec["error"] == "timeout" else "runtime_error", "error": rec["error"]})
        elif values_equal(rec["value"], case["expected"], rel_tol):
            out.append({"status": "passed"})
        else:
            out.append({"status": "failed", "got": repr(rec["value"])[:200]})
    return _verdict(out, run.elapsed_s)


def run_script_test(sandbox: Sandbox, program: str, tests: dict, limits: Limits) -> CodeVerdict:
    nonce = secrets.token_hex(16)
    spec = {"mode": "script", "entry_points": entry_points(tests), "test_code": tests["code"],
            "prelude": tests.get("prelude", ""), "case_timeout_s": limits.timeout_s}
    run, records = _harness_run(sandbox, program, spec, limits, nonce)
    status = _load_failure(records, run)
    result = records[1] if status is None and len(records) > 1 else {}
    if status is None and result.get("result") == "passed" and result.get("nonce") == nonce and run.returncode == 0:
        status = "passed"
    elif status is None:
        verdict = result.get("result")
        status = failure_status(run) or (verdict if verdict in ("failed", "timeout", "runtime_error") else "runtime_error")
    case = {"status": status}
    if status != "passed":
        case["error"] = (result.get("error") or run.stderr[-500:].decode(errors="replace"))[-500:]
    return _verdict([case], run.elapsed_s)


def run_stdio_tests(sandbox: Sandbox, program: str, tests: dict, limits: Limits) -> CodeVerdict:
    out, elapsed = [], 0.0
    for case in tests["cases"]:
        run = sandbox.run({"solution.py": program}, ["python", "-I", "solution.py"],
                          stdin=str(case.get("stdin", "")).encode(), limits=limits)
        elapsed += run.elapsed_s
        err = run.stderr[-2000:].decode(errors="replace")
        status = failure_status(run)
        if status is None and "SyntaxError" in err and run.returncode:
            status = "syntax_error"
        elif status is None and run.returncode != 0:
            status = "runtime_error"
        elif status is None:
            same = normalise_lines(run.stdout.decode(errors="replace")) == normalise_lines(str(case["stdout"]))
            status = "passed" if same else "failed"
        out.append({"status": status} | ({"error": err[-300:]} if status not in ("passed", "failed") else {}))
        if status in ("syntax_error",):
            out += [{"status": status}] * (len(tests["cases"]) - len(out))
            break
    return _verdict(out, elapsed)


def _verdict(cases: list[dict], elapsed: float) -> CodeVerdict:
    passed = sum(c["status"] == "passed" for c in cases)
    worst = min((c["status"] for c in cases), key=SEVERITY.index, default="failed")
    status = "passed" if cases and passed == len(cases) else (worst if worst != "passed" else "failed")
    return CodeVerdict(status, passed, len(cases), cases, elapsed)
