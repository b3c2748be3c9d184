"""`differential` code tests: a candidate is scored by agreeing with a trusted reference program
run in the sandbox on the same inputs (code translation). Both run in the sandbox; the parent
compares. Includes the translation set in rewards/code/data/translations.jsonl."""
import json
import re
import secrets
from pathlib import Path

import pytest

from rewards.code.differential import generate_inputs
from rewards.code.sandbox import UID_BASE, Limits, Sandbox, SandboxUnavailable
from rewards.verify import TEST_TYPES, VerifySettings, row_problem, verify_row
from tests.rewards.attack_programs import scan_program

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "rewards" / "code" / "data" / "translations.jsonl"
SETTINGS = VerifySettings(limits=Limits(timeout_s=5, cpu_s=5, memory_mb=512))
MEAN = "def mean(xs):\n    return sum(xs) / len(xs)\n"
MEAN_INPUTS = [[[1, 2, 3]], [[]], [[-1.5, 2]], [[10 ** 20, 1]]]


def row(program, reference=MEAN, **tests):
    if tests.get("mode") != "stdio":
        tests.setdefault("entry_point", "mean")
    if "generator" not in tests:
        tests.setdefault("inputs", MEAN_INPUTS)
    return {"id": "r", "kind": "code", "program": program,
            "tests": {"type": "differential", "reference": reference, **tests}}


@pytest.fixture()
def verify(sandbox):
    def go(r, settings=SETTINGS):
        return verify_row(r, sandbox, None, settings)
    return go


def test_equal_outputs_pass_exceptions_by_type_floats_with_tolerance(verify):
    loop = "def mean(xs):\n    t = 0.0\n    for x in xs:\n        t += x\n    return t * (1 / len(xs))\n"
    out = verify(row(loop))
    assert out["status"] == "passed" and out["reward"] == 1.0 and out["total"] == 4, out
    # the empty list: both raise ZeroDivisionError; a different exception type is a mismatch
    other = "def mean(xs):\n    if not xs:\n        raise ValueError('empty')\n    return sum(xs) / len(xs)\n"
    out = verify(row(other))
    assert out["passed"] == 3 and out["status"] == "runtime_error", out
    assert out["cases"][1]["got"] == "raises ValueError" and out["cases"][1]["expected"] == "raises ZeroDivisionError"


def test_exception_type_names_survive_any_constructor(verify):
    """UnicodeDecodeError cannot be rebuilt from a message; its name still crosses intact."""
    ref = "def mean(xs):\n    return bytes(xs).decode()\n"
    styled = "import codecs\ndef mean(xs):\n    return codecs.decode(bytes(xs), 'utf-8')\n"
    out = verify(row(styled, reference=ref, inputs=[[[104, 105]], [[255]]]))
    assert out["status"] == "passed", out
    out = verify(row("def mean(xs):\n    raise ValueError\n", reference=ref, inputs=[[[255]]]))
    assert out["cases"][0]["expected"] == "raises UnicodeDecodeError", out


def test_different_outputs_fail_with_fractional_reward(verify):
    out = verify(row("def mean(xs):\n    return sum(xs) // len(xs)\n"))
    assert out["status"] == "failed" and out["reward"] == 0.75, out  # 6 // 3 == 2 equals 2.0, as in `function`
    case = out["cases"][2]
    assert case == {"status": "failed", "input": "[[-1.5, 2]]", "got": "0.0", "expected": "0.25"}
    strict = verify(row("def mean(xs):\n    return sum(xs) // len(xs)\n"),
                    VerifySettings(limits=SETTINGS.limits, all_or_nothing=True))
    assert strict["reward"] == 0.0


@pytest.mark.parametrize("program,status", [
    ("def mean(xs):\n    return xs[3]\n", "runtime_error"),  # raises where the reference returns
    ("import os\ndef mean(xs):\n    os._exit(1)\n", "runtime_error"),  # the process dies
    ("def mean(xs):\n    while True:\n        pass\n", "timeout"),
    ("def mean(xs)\n    return 0\n", "syntax_error"),
    ("def mean(xs):\n    return [bytearray(1 << 20) for _ in range(10 ** 4)]\n", "memory_limit"),
])
def test_candidate_failures_keep_their_status(verify, program, status):
    out = verify(row(program, inputs=[[[1, 2]], [[3]]]), VerifySettings(limits=Limits(timeout_s=2, cpu_s=2,
                                                                                     memory_mb=256)))
    assert out["status"] == status and out["reward"] == 0.0, out


@pytest.mark.parametrize("reference,inputs,where", [
    ("import ctypes\ndef mean(xs):\n    if not xs:\n        ctypes.string_at(0)\n    return 1\n", MEAN_INPUTS, "#1"),
    ("def mean(xs):\n    while len(xs) == 2:\n        pass\n    return 1\n", MEAN_INPUTS, "#2"),
    ("def mean(xs)\n    return 1\n", MEAN_INPUTS, "#0"),
    ("def average(xs):\n    return 1\n", MEAN_INPUTS, "#0"),  # no such entry point
    ("class Box:\n    pass\ndef mean(xs):\n    return Box()\n", MEAN_INPUTS, "#0"),  # not plain data
])
def test_reference_failure_is_invalid_input(verify, reference, inputs, where):
    out = verify(row(MEAN, reference=reference, inputs=inputs), VerifySettings(limits=Limits(timeout_s=2, cpu_s=2)))
    assert out["status"] == "invalid_input" and out["reward"] == 0.0 and out["total"] == 0, out
    assert f"the reference failed on input {where}" in out["error"], out["error"]


def test_stdio_reference_crash_is_invalid_input(verify):
    reference = "import ctypes\nn = int(input())\nif n < 0:\n    ctypes.string_at(0)\nprint(n)\n"
    out = verify(row("print(int(input()))", reference=reference, mode="stdio", inputs=["1", "2", "-3"]))
    assert out["status"] == "invalid_input" and "the reference failed on input #2" in out["error"], out


@pytest.mark.parametrize("program", [
    "import random\ndef mean(xs):\n    return random.getrandbits(64)\n",  # random without a seed
    "import time\ndef mean(xs):\n    return time.time_ns()\n",
])
def test_candidate_nondeterminism_is_caught(verify, program):
    out = verify(row(program, repeat=3))
    assert out["status"] == "failed" and out["reward"] == 0.0
    assert all(c["nondeterministic"] and len(c["got"]) == 3 for c in out["cases"]), out["cases"]


def test_a_candidate_right_only_sometimes_is_caught(verify):
    """Right on about half the runs: over 3 runs of 12 inputs a lucky streak is 1 in 4^12."""
    flaky = "import random\ndef mean(xs):\n    return sum(xs) / len(xs) + (random.random() < 0.5)\n"
    out = verify(row(flaky, inputs=[[[i, 1]] for i in range(12)], repeat=3))
    assert out["status"] == "failed" and any(c.get("nondeterministic") for c in out["cases"]), out


def test_nondeterministic_reference_is_invalid_input(verify):
    reference = "import random\ndef mean(xs):\n    return random.random()\n"
    out = verify(row(MEAN, reference=reference))
    assert out["status"] == "invalid_input" and "the reference is nondeterministic on input #0" in out["error"], out


GEN = "def gen(rng, i):\n    return [[rng.randint(-9, 9) for _ in range(i % 4)]]\n"


def test_generated_inputs_are_reproducible(sandbox):
    first = generate_inputs(sandbox, {"code": GEN, "seed": 3, "count": 30}, "function", SETTINGS.limits)
    again = generate_inputs(sandbox, {"code": GEN, "seed": 3, "count": 30}, "function", SETTINGS.limits)
    other = generate_inputs(sandbox, {"code": GEN, "seed": 4, "count": 30}, "function", SETTINGS.limits)
    assert first == again and first[0] != other[0] and len(first[0]) == 30
    assert first[0][0] == [[]]  # i == 0: the empty list, an edge case the generator puts first


def test_generator_rows(verify):
    generator = {"code": GEN, "seed": 3, "count": 30}
    out = verify(row("def mean(xs):\n    return sum(xs) / len(xs) if xs else 1 / 0\n", generator=generator))
    assert out["status"] == "passed" and out["total"] == 30, out
    out = verify(row("def mean(xs):\n    return sum(xs) / len(xs) if xs else 0.0\n", generator=generator))
    assert out["status"] == "failed" and 0 < out["reward"] < 1 and out["cases"][0]["input"] == "[[]]", out


@pytest.mark.parametrize("code,message", [
    ("def gen(rng, i):\n    return 1 / 0\n", "the inputs' generator failed (runtime_error): "),
    ("def gen(rng, i):\n    while True:\n        pass\n", "the inputs' generator failed (timeout)"),
    ("def gen(rng, i):\n    return i\n", "generated inputs must each be a list of arguments; input #0 is not"),
    ("class A:\n    pass\ndef gen(rng, i):\n    return [A()]\n", "gen must return plain data"),
    ("def gen(rng, i):\n    return [range(i)]\n", "input #0 is not plain data"),
])
def test_broken_generator_is_invalid_input(verify, code, message):
    out = verify(row(MEAN, generator={"code": code, "seed": 0, "count": 3}),
                 VerifySettings(limits=Limits(timeout_s=2, cpu_s=2)))
    assert out["status"] == "invalid_input" and message in out["error"], out


SUM_REF = "import sys\nnums = [int(t) for t in sys.stdin.read().split()]\nprint(sum(nums))\nprint(max(nums))\n"


def test_stdio_mode(verify):
    inputs = ["1 2 3", "-4\n5\n", "", "7"]
    styled = "data = open(0).read().split()\nvals = list(map(int, data))\nprint(sum(vals))\nprint(f'{max(vals)}  ')\n"
    out = verify(row(styled, reference=SUM_REF, mode="stdio", inputs=inputs))
    # "" makes both print 0 and then raise ValueError from max(): same output, same exception type
    assert out["status"] == "passed" and out["reward"] == 1.0, out
    wrong = "nums = [int(t) for t in input().split()]\nprint(sum(nums))\nprint(max(nums))\n"
    out = verify(row(wrong, reference=SUM_REF, mode="stdio", inputs=inputs))
    assert [c["status"] for c in out["cases"]] == ["passed", "failed", "runtime_error", "passed"], out
    assert out["cases"][2]["got"] == "raises EOFError" and out["cases"][2]["expected"] == "raises ValueError after printing ['0']"
    exits = verify(row("import sys\nsys.exit(3)", reference="import sys\nprint('x')\nsys.exit(3)", mode="stdio",
                       inputs=["a"]))
    assert exits["cases"][0]["got"] == "exits with status 3" and exits["status"] == "failed", exits
    assert verify(row("print(", reference=SUM_REF, mode="stdio", inputs=inputs))["status"] == "syntax_error"


@pytest.mark.parametrize("tests,field", [
    ({"entry_point": "f", "inputs": [[1]]}, "'reference'"),
    ({"reference": "x", "inputs": [[1]]}, "'entry_point'"),
    ({"reference": "x", "mode": "stdio", "entry_point": "f", "inputs": ["1"]}, "drop 'entry_point'"),
    ({"reference": "x", "mode": "batch", "inputs": ["1"]}, "'mode'"),
    ({"reference": "x", "entry_point": "f"}, "exactly one of 'inputs' (a list) or 'generator'"),
    ({"reference": "x", "entry_point": "f", "inputs": [[1]], "generator": {}}, "exactly one of 'inputs'"),
    ({"reference": "x", "entry_point": "f", "inputs": []}, "'inputs' must be a non-empty list"),
    ({"reference": "x", "entry_point": "f", "inputs": [1]}, "function 'inputs' must each be a list of arguments"),
    ({"reference": "x", "mode": "stdio", "inputs": [1]}, "stdio 'inputs' must each be a string"),
    ({"reference": "x", "entry_point": "f", "generator": {"seed": 1, "count": 2}}, "'generator' needs 'code'"),
    ({"reference": "x", "entry_point": "f", "generator": {"code": "", "seed": "1", "count": 2}}, "'generator.seed'"),
    ({"reference": "x", "entry_point": "f", "generator": {"code": "", "seed": 1, "count": 0}}, "'generator.count'"),
    ({"reference": "x", "entry_point": "f", "inputs": [[1]], "repeat": 0}, "'repeat'"),
])
def test_malformed_rows_name_the_field(tests, field):
    problem = row_problem({"id": 1, "kind": "code", "program": "x", "tests": {"type": "differential", **tests}})
    assert problem and field in problem, problem


# --- attacks: the candidate must not reach the reference, its outputs or the comparison ---

@pytest.fixture()
def one_slot(sandbox):
    """One slot: the reference's runs and the candidate's share the slot's fork server and template."""
    try:
        box = Sandbox(sandbox.mode, slots=1, uid_base=UID_BASE + 3328)
    except SandboxUnavailable as e:
        pytest.skip(str(e))
    if not box.mode.startswith("bwrap"):  # rlimits mode shares /tmp and shows host processes (README)
        box.close()
        pytest.skip(f"mode {box.mode} has no per-run file system to keep programs apart")
    yield box
    box.close()


SLOW = VerifySettings(limits=Limits(timeout_s=30, cpu_s=30))


@pytest.mark.parametrize("mode", ["function", "stdio"])
def test_candidate_cannot_find_the_reference(one_slot, mode):
    """The reference carries a marker; the candidate searches files, /proc, descriptors, the
    environment and the memory of every process it can see, and says "found" only if it got it."""
    marker = "tf-reference-" + secrets.token_hex(8)
    if mode == "function":
        reference = f"MARKER = {marker!r}\ndef probe():\n    return 'found'\n"
        tests = {"entry_point": "probe", "inputs": [[]]}
    else:
        reference = f"MARKER = {marker!r}\nprint('found')\n"
        tests = {"mode": "stdio", "inputs": [""]}
    out = verify_row(row(scan_program(marker), reference=reference, **tests), one_slot, None, SLOW)
    assert out["status"] == "failed" and out["reward"] == 0.0, out
    # control: the same scan passes when the marker is somewhere it may look
    leak = f"open('/tmp/notes.txt', 'w').write({marker!r})\n" + scan_program(marker)
    assert verify_row(row(leak, reference=reference, **tests), one_slot, None, SLOW)["status"] == "passed"


SECRET = "def probe(x):\n    return (x * 7919 + 104729) % 1000003\n"  # the candidate cannot know it


@pytest.mark.parametrize("program", [
    # patch the comparison machinery it can reach: builtins, pickle, json, math
    "import builtins, math, json, pickle, _pickle\nbuiltins.isinstance = lambda *a: True\nbuiltins.len = lambda x: 0\n"
    "math.isclose = lambda *a, **k: True\njson.loads = pickle.loads = _pickle.loads = lambda *a, **k: ('ok', 1)\n"
    "builtins.type = lambda *a: int\ndef probe(x):\n    return 0\n",
    # values that claim to equal anything
    "class Int(int):\n    def __eq__(self, other): return True\n    __hash__ = int.__hash__\n"
    "def probe(x):\n    return Int(0)\n",
    "class Eq:\n    def __eq__(self, other): return True\ndef probe(x):\n    return Eq()\n",
    # fake result records and markers on every descriptor it holds
    "import os, pickle\nfake = pickle.dumps({'ok': True, 'value': 0, 'status': 'passed', 'result': 'passed'})\n"
    "for fd in range(1, 64):\n    try:\n        os.write(fd, len(fake).to_bytes(4, 'big') + fake + b'passed\\n')\n"
    "    except OSError:\n        pass\ndef probe(x):\n    print('passed'); return 0\n",
    # overwrite the sandbox's own code or the stdlib the reference's run will import
    "import glob\nfor p in glob.glob('/opt/threefold/*.py') + ['/usr/lib/python3/dist-packages/sitecustomize.py']:\n"
    "    try:\n        open(p, 'w').write('def probe(x):\\n    return 0\\n')\n    except OSError:\n        pass\n"
    "def probe(x):\n    return 0\n",
])
def test_candidate_cannot_fool_the_comparison(verify, program):
    tests = {"entry_point": "probe", "inputs": [[i] for i in range(5)]}
    out = verify(row(program, reference=SECRET, **tests))
    assert out["passed"] == 0 and out["status"] != "passed", out
    honest = verify(row(SECRET.replace("x * 7919", "7919 * x"), reference=SECRET, **tests))
    assert honest["status"] == "passed", honest  # the reference and the slot are unharmed


def test_nothing_left_behind_for_a_later_run(one_slot):
    """A candidate writes a marker wherever it can; the next row's candidate finds none of it."""
    marker = "tf-left-" + secrets.token_hex(8)
    writer = ("import os\ndef probe():\n    for d in ('/work', '/tmp', '/dev/shm', '/var/tmp', '/opt/threefold'):\n"
              f"        try:\n            open(os.path.join(d, 'x'), 'w').write({marker!r})\n"
              "        except OSError:\n            pass\n    return 'found'\n")
    tests = {"entry_point": "probe", "inputs": [[]]}
    assert verify_row(row(writer, reference="def probe():\n    return 'found'\n", **tests), one_slot, None,
                      SETTINGS)["status"] == "passed"
    out = verify_row(row(scan_program(marker), reference="def probe():\n    return 'found'\n", **tests), one_slot,
                     None, SLOW)
    assert out["cases"][0].get("got") == "'clean'", out


# --- the translation set ---

def test_translation_set_separates_correct_from_wrong(verify):
    rows = [json.loads(line) for line in TRANSLATIONS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 20 and {r["correct"] for r in rows} == {True, False}
    verdicts = {r["id"]: (r["correct"], verify(r)) for r in rows}
    errors = {k: v["status"] for k, (_, v) in verdicts.items() if v["status"] in ("sandbox_error", "invalid_input")}
    assert errors == {}
    wrongly_failed = [k for k, (ok, v) in verdicts.items() if ok and (v["status"] != "passed" or v["reward"] != 1.0)]
    wrongly_passed = [k for k, (ok, v) in verdicts.items() if not ok and (v["status"] == "passed" or v["reward"] == 1.0)]
    assert wrongly_failed == [] and wrongly_passed == []


def test_readme_documents_every_test_type_and_the_translation_set():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Verifying code and math offline"):text.index("### The sandbox")]
    listed = re.findall(r"^- `([a-z]+)`:", section, flags=re.M)
    assert set(TEST_TYPES) <= set(listed), listed
    assert "rewards/code/data/translations.jsonl" in section
