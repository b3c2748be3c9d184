"""Verifier integrity: a program must not pass a test it did not solve.

Four classes of attack, each generic (it knows no particular problem) and each with an honest
control that must still pass: reading the test (files, frames, gc, raw memory, /proc,
environment, descriptors), shadowing the test's builtins, recovering an earlier request from
memory, and leaving data for a later program. Before the fix, the reader passed about nine in
ten HumanEval problems and the shadower, the earlier-request scan and the leftovers all
succeeded (see the closing note of the change that added this file).
"""
import ast
import builtins
import secrets

import pytest

from rewards.code.run_tests import run_function_tests, run_script_test, run_stdio_tests
from rewards.code.sandbox import UID_BASE, Limits, Sandbox, SandboxUnavailable
from tests.rewards.attack_programs import READER, SHADOWER, leave_behind, scan_program
from tests.rewards.test_humaneval import run_all

LIMITS = Limits(timeout_s=20, cpu_s=20)
FRESH = ("/work", "/tmp", "/dev/shm")  # the only places a program may write


@pytest.fixture()
def one_slot(sandbox):
    """One slot, so consecutive runs share whatever a slot keeps between programs (the fork
    server's zygote and template); in the same mode as the session's sandbox."""
    try:
        box = Sandbox(sandbox.mode, slots=1, uid_base=UID_BASE + 3072)
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    yield box
    box.close()


def test_test_reader_passes_nothing(sandbox, problems):
    statuses = run_all(sandbox, problems, body=READER)
    passed = sorted(k for k, v in statuses.items() if v == "passed")
    assert len(statuses) == 164 and passed == []


def test_reader_finds_answers_when_they_are_in_reach(sandbox):
    """Control for the reader itself: given the asserts in a file it can read, it does pass."""
    test = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(10, -4) == 6\n"
    program = f"open('/tmp/notes.txt', 'w').write({test!r})\ndef add(a, b):" + READER
    tests = {"type": "script", "code": test, "entry_point": "add"}
    assert run_script_test(sandbox, program, tests, LIMITS).status == "passed"


def test_builtin_shadower_passes_nothing(sandbox, problems):
    statuses = run_all(sandbox, problems, body=SHADOWER)
    assert [k for k, v in statuses.items() if v == "passed"] == []


def honest_helpers(problem: dict) -> str:
    """The canonical solution plus helpers of its own named like builtins the test uses (and the
    solution does not), each of which would break the test if the test could see it."""
    used = {n.id for n in ast.walk(ast.parse(problem["prompt"] + problem["canonical_solution"]))
            if isinstance(n, ast.Name)}
    in_test = {n.id for n in ast.walk(ast.parse(problem["test"])) if isinstance(n, ast.Name)}
    names = sorted((in_test & set(dir(builtins))) - used - {"True", "False", "None"})
    helpers = "".join(f"\n\ndef {n}(*args, **kwargs):\n    raise RuntimeError('helper of this solution')\n"
                      for n in names)
    return problem["prompt"] + problem["canonical_solution"] + helpers


def test_solutions_with_helpers_named_like_builtins_still_pass(sandbox, problems):
    programs = {p["task_id"]: honest_helpers(p) for p in problems}
    with_helpers = [k for k, prog in programs.items() if "helper of this solution" in prog]
    assert len(with_helpers) >= 10  # 14 of HumanEval's tests call a builtin their solution does not
    statuses = run_all(sandbox, problems, body=None, programs=programs)
    assert {k: v for k, v in statuses.items() if v != "passed"} == {}


def test_test_never_sees_candidate_names(sandbox):
    """A test helper the candidate redefines keeps the test's meaning; the test sees only
    `candidate` and the entry point."""
    test = ("def check(candidate):\n    assert helper(candidate(3)) == 9\n    assert sorted([3, 1]) == [1, 3]\n"
            "    assert 'secret_table' not in globals()\n")
    tests = {"type": "script", "code": test, "entry_point": "square", "prelude": "def helper(x):\n    return x\n"}
    honest = "def square(x):\n    return x * x\n"
    cheat = "def square(x):\n    return 0\ndef helper(x):\n    return 9\nsorted = lambda x: [1, 3]\nsecret_table = 1\n"
    assert run_script_test(sandbox, honest, tests, LIMITS).status == "passed"
    assert run_script_test(sandbox, cheat, tests, LIMITS).status == "failed"


def test_earlier_request_is_not_in_a_later_program(one_slot):
    marker = "tf-earlier-" + secrets.token_hex(8)
    first = {"type": "script", "entry_point": "f",
             "code": f"def check(candidate):\n    assert candidate() == {marker!r}\n"}
    stdin_first = {"type": "stdio", "cases": [{"stdin": marker, "stdout": marker}]}
    assert run_script_test(one_slot, f"def f():\n    return {marker!r}\n", first, LIMITS).status == "passed"
    assert run_stdio_tests(one_slot, "print(input())", stdin_first, LIMITS).status == "passed"
    probe = scan_program(marker)
    as_function = {"type": "function", "entry_point": "probe", "cases": [{"args": [], "expected": "clean"}]}
    verdict = run_function_tests(one_slot, probe, as_function, LIMITS, 1e-6)
    assert verdict.status == "passed", verdict.cases
    as_script = {"type": "stdio", "cases": [{"stdin": "", "stdout": "clean"}]}
    verdict = run_stdio_tests(one_slot, probe, as_script, LIMITS)
    assert verdict.status == "passed", verdict.cases


def test_scan_finds_what_is_in_reach(one_slot):
    """Control for the scan: a marker in its own arguments is found."""
    marker = "tf-own-" + secrets.token_hex(8)
    probe = scan_program(marker) + f"\nKEEP = {marker!r}\n"
    tests = {"type": "function", "entry_point": "probe", "cases": [{"args": [], "expected": "found"}]}
    assert run_function_tests(one_slot, probe, tests, LIMITS, 1e-6).status == "passed"


def test_nothing_left_for_a_later_program(one_slot):
    if not one_slot.mode.startswith("bwrap"):
        pytest.skip(f"{one_slot.mode} shares the host's /tmp (documented as weaker)")
    marker = "tf-left-" + secrets.token_hex(8)
    wrote = one_slot.run({"m.py": leave_behind(marker)}, ["python", "m.py"], limits=LIMITS)
    places = set(wrote.stdout.decode().split())
    assert set(FRESH) <= places, wrote  # it could write where it should
    assert places <= set(FRESH), f"writable outside the fresh per-program storage: {places - set(FRESH)}"
    probe = scan_program(marker)
    as_script = {"type": "stdio", "cases": [{"stdin": "", "stdout": "clean"}]}
    verdict = run_stdio_tests(one_slot, probe, as_script, LIMITS)
    assert verdict.status == "passed", verdict.cases


def test_modules_planted_by_the_candidate_never_reach_the_test(sandbox):
    """The candidate may write /work and /tmp; a module it plants there under a stdlib name must
    not be what the test imports (the harness's sys.path holds neither)."""
    fake = "def hsv_to_rgb(*a):\n    return (9.0, 9.0, 9.0)\n"
    plant = (f"for p in ('/work/colorsys.py', '/tmp/colorsys.py', 'colorsys.py'):\n"
             f"    try:\n        open(p, 'w').write({fake!r})\n    except OSError:\n        pass\n")
    # the real hsv_to_rgb(0, 0, v) is (v, v, v); the planted one always says (9, 9, 9)
    test = "def check(candidate):\n    import colorsys\n    assert colorsys.hsv_to_rgb(0.0, 0.0, candidate(3.0)) == (9.0, 9.0, 9.0)\n"
    tests = {"type": "script", "code": test, "entry_point": "square"}
    cheat = plant + "def square(x):\n    return 0.0\n"
    honest = plant + "def square(x):\n    return x * x\n"
    assert run_script_test(sandbox, cheat, tests, LIMITS).status == "failed"
    assert run_script_test(sandbox, honest, tests, LIMITS).status == "passed"
