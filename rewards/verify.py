"""One verification row in, one verdict record out: code (sandboxed tests), math (math-verify) or
exact (normalised answer against accepted aliases, rewards/exact).

Input rows: {"id", "kind": "code", "program", "tests", "limits"?}, {"id", "kind": "math", "response",
"answer"} or {"id", "kind": "exact", "response", "answers" | "key" + "knowledge"}. Output: {"id",
"reward", "passed", "total", "status", "cases", "elapsed_s"}. A malformed row gives status
`invalid_input` with a message; nothing here raises for one bad row.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, replace

from rewards.code.differential import differential_problem, run_differential_tests
from rewards.code.run_tests import run_function_tests, run_script_test, run_stdio_tests
from rewards.math.answer import MathChecker
from rewards.code.sandbox import Limits, Sandbox
from rewards import exact

STATUSES = ("passed", "failed", "timeout", "memory_limit", "output_limit", "runtime_error", "syntax_error",
            "sandbox_error", "no_answer", "error", "invalid_input")  # the README's table lists each
TEST_TYPES = ("function", "stdio", "script", "differential")


@dataclass(frozen=True)
class VerifySettings:
    limits: Limits = Limits()
    max_timeout_s: float = 60.0
    max_memory_mb: int = 4096
    all_or_nothing: bool = False
    rel_tol: float = 1e-6
    math_timeout_s: float = 5.0


def row_problem(row) -> str | None:
    """What is wrong with a row, or None. Messages name the field and what it must be."""
    if not isinstance(row, dict):
        return "row must be a JSON object"
    kind = row.get("kind")
    if kind == "math":
        missing = [k for k in ("response", "answer") if k not in row]
        return f"math row needs {', '.join(missing)}" if missing else None
    if kind == "exact":
        return exact.row_problem(row)
    if kind != "code":
        return f"kind must be 'code', 'math' or 'exact', got {kind!r}"
    if not isinstance(row.get("program"), str):
        return "code row needs 'program' as a string"
    tests = row.get("tests")
    if not isinstance(tests, dict) or tests.get("type") not in TEST_TYPES:
        return f"'tests' must be an object whose 'type' is one of {', '.join(TEST_TYPES)}"
    if tests["type"] == "function" and not isinstance(tests.get("entry_point"), str):
        return "function tests need 'entry_point' (the function's name)"
    if tests["type"] in ("function", "stdio"):
        cases = tests.get("cases")
        if not isinstance(cases, list) or not cases or not all(isinstance(c, dict) for c in cases):
            return f"{tests['type']} tests need a non-empty 'cases' list of objects"
        need = ("expected",) if tests["type"] == "function" else ("stdout",)
        if any(k not in c for c in cases for k in need):
            return f"every {tests['type']} case needs {need[0]!r}"
        if tests["type"] == "function" and any(not isinstance(c.get("args", []), list) for c in cases):
            return "function case 'args' must be a list"
    if tests["type"] == "script":
        if not isinstance(tests.get("code"), str):
            return "script tests need 'code' (the test program) as a string"
        names = tests.get("entry_point")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
            return ("script tests need 'entry_point': the name (or a list of names) of the program's functions "
                    "the test may call; the test sees nothing else of the program")
        if not isinstance(tests.get("prelude", ""), str):
            return "script 'prelude' (trusted code run before the test, e.g. helpers it calls) must be a string"
    if tests["type"] == "differential":
        problem = differential_problem(tests)
        if problem:
            return problem
    limits = row.get("limits", {})
    if not isinstance(limits, dict) or any(k not in ("timeout_s", "memory_mb") for k in limits):
        return "'limits' may only hold timeout_s and memory_mb"
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in limits.values()):
        return "'limits' values must be positive numbers"
    return None


def row_limits(row: dict, settings: VerifySettings) -> Limits:
    lim = row.get("limits") or {}
    timeout = min(float(lim.get("timeout_s", settings.limits.timeout_s)), settings.max_timeout_s)
    memory = min(int(lim.get("memory_mb", settings.limits.memory_mb)), settings.max_memory_mb)
    return replace(settings.limits, timeout_s=timeout, cpu_s=max(1, int(timeout + 1)), memory_mb=memory)


def invalid(row_id, message: str) -> dict:
    return {"id": row_id, "reward": 0.0, "passed": 0, "total": 0, "status": "invalid_input",
            "cases": [], "elapsed_s": 0.0, "error": message}


def verify_row(row, sandbox: Sandbox, checker: MathChecker, settings: VerifySettings) -> dict:
    row_id = row.get("id") if isinstance(row, dict) else None
    problem = row_problem(row)
    if problem:
        return invalid(row_id, problem)
    start = time.perf_counter()
    if row["kind"] in ("math", "exact"):  # one answer, one case
        if row["kind"] == "math":
            result = checker.score([row["response"]], [row["answer"]])[0]
        else:
            result = exact.score_row(row)
            if result.status == "invalid_input":  # a key not in the knowledge file, or a bad file
                return invalid(row_id, result.detail["error"])
        return {"id": row_id, "reward": result.score, "passed": int(result.status == "passed"), "total": 1,
                "status": result.status, "cases": [{"status": result.status, **result.detail}],
                "elapsed_s": time.perf_counter() - start}
    tests, limits = row["tests"], row_limits(row, settings)
    run = {"function": lambda: run_function_tests(sandbox, row["program"], tests, limits, settings.rel_tol),
           "stdio": lambda: run_stdio_tests(sandbox, row["program"], tests, limits),
           "script": lambda: run_script_test(sandbox, row["program"], tests, limits),
           "differential": lambda: run_differential_tests(sandbox, row["program"], tests, limits, settings.rel_tol),
           }[tests["type"]]
    try:
        verdict = run()
        if verdict.status == "sandbox_error":  # the sandbox broke (and was replaced), not the program
            verdict = run()
    except Exception as e:  # noqa: BLE001 - a broken sandbox run must not lose the row
        return {**invalid(row_id, f"sandbox failed: {type(e).__name__}: {e}"), "status": "sandbox_error"}
    if verdict.status == "invalid_input":  # found only by running the row (a differential reference that fails)
        return {**invalid(row_id, verdict.error), "elapsed_s": time.perf_counter() - start}
    return {"id": row_id, "reward": verdict.reward(settings.all_or_nothing), "passed": verdict.passed,
            "total": verdict.total, "status": verdict.status, "cases": verdict.cases,
            "elapsed_s": time.perf_counter() - start}


class VerifierCore:
    """What a verifier actor or a Serve verifier replica holds: a sandbox with `slots` concurrent
    programs, a math checker and the settings; rows run concurrently, verdicts in input order."""

    def __init__(self, settings: VerifySettings, slots: int, isolation: str, uid_base: int, pids_cgroup: bool = False):
        self.settings = settings
        self.sandbox = Sandbox(isolation, slots=slots, uid_base=uid_base, pids_cgroup=pids_cgroup)
        self.checker = MathChecker(timeout_s=settings.math_timeout_s)
        self.rows_done = 0

    async def verify(self, rows: list) -> list[dict]:
        out = await asyncio.gather(*(asyncio.to_thread(verify_row, r, self.sandbox, self.checker, self.settings)
                                     for r in rows))
        self.rows_done += len(rows)
        return list(out)

    async def score(self, responses: list[str], answers: list[str]) -> list:
        return await asyncio.to_thread(self.checker.score, responses, answers)

    def info(self) -> dict:
        return {"mode": self.sandbox.mode, "pid": os.getpid(), "rows_done": self.rows_done}


_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", re.DOTALL)


def extract_program(response: str) -> str:
    """The program in a model's response: the last fenced code block when there is one (models often
    wrap code in ```python fences and add prose), else the whole response."""
    if not isinstance(response, str):
        return response
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response
