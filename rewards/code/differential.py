"""`differential` code tests: the candidate must behave like a trusted reference program.

Used for code translation: no expected values, only a reference that defines the behaviour.
Both programs run in the sandbox under the row's limits, each in runs of its own, so the
candidate never shares a process, file system or namespace with the reference, the inputs'
generator or the comparison. Their outcomes (plain data) come back here, to the trusted parent,
which compares them; nothing of the reference or its outputs ever reaches the candidate.

- mode `function`: one harness run calls `entry_point(*args)` for every input (as the
  `function` type does); an outcome is the returned value or the raised exception's type name.
- mode `stdio`: one run per input with the input as stdin; an outcome is the whitespace-
  normalised stdout plus how the script ended (exit 0, an uncaught exception's type name, or
  `sys.exit(N)`).
Inputs come from the row (`inputs`) or from trusted `generator` code (`gen(rng, i)` with
`rng = random.Random(seed)`), which runs in the sandbox too, never alongside candidate code.
Each program runs `repeat` times (default 2) in fresh processes: a candidate whose outcomes
differ between runs fails that input; a reference that does, or that crashes, times out or
does not load, makes the row `invalid_input` (the row is broken, not the candidate).
"""
from __future__ import annotations

import io
import re
import time

from rewards.code.run_tests import SEVERITY, CodeVerdict, _harness_run, _load_failure, _verdict, failure_status, \
    normalise_lines, values_equal
from rewards.code.sandbox import Limits, Sandbox
from rewards.code.sandbox_candidate import plain
from rewards.code.sandbox_harness import PlainUnpickler

MAX_INPUTS = 1000
MAX_REPEAT = 5
MODES = ("function", "stdio")

# Runs in the sandbox with the task's generator as generator.py; pickles the inputs to the channel.
GENERATOR_DRIVER = """import _pickle as pickle, os, random, sys
source = open("generator.py", encoding="utf-8").read()
ns = {"__name__": "generator"}
exec(compile(source, "generator.py", "exec"), ns)
rng = random.Random(int(sys.argv[1]))
inputs = [ns["gen"](rng, i) for i in range(int(sys.argv[2]))]
try:
    data = pickle.dumps(inputs, protocol=4)
except Exception as e:
    sys.exit(f"gen must return plain data (lists, strings, numbers...): {type(e).__name__}: {e}")
with os.fdopen(int(sys.argv[-1]), "wb") as chan:
    chan.write(data)
"""


def differential_problem(tests: dict) -> str | None:
    """What is wrong with a `differential` tests object, or None; messages name the field."""
    if not isinstance(tests.get("reference"), str):
        return "differential tests need 'reference' (the trusted program the candidate must match) as a string"
    mode = tests.get("mode", "function")
    if mode not in MODES:
        return f"differential 'mode' must be 'function' (the default) or 'stdio', got {mode!r}"
    entry = tests.get("entry_point")
    if mode == "function" and not (isinstance(entry, str) and entry.isidentifier()):
        return "differential function tests need 'entry_point': the name of the function both programs define"
    if mode == "stdio" and entry is not None:
        return "differential stdio tests run whole scripts: drop 'entry_point' (or use mode 'function')"
    repeat = tests.get("repeat", 2)
    if not _int_in(repeat, 1, MAX_REPEAT):
        return f"differential 'repeat' (runs of each program per input) must be an integer from 1 to {MAX_REPEAT}"
    if ("inputs" in tests) == ("generator" in tests):
        return "differential tests need exactly one of 'inputs' (a list) or 'generator' (an object)"
    if "inputs" in tests:
        return inputs_problem(tests["inputs"], mode, "'inputs'")
    gen = tests["generator"]
    if not isinstance(gen, dict) or not isinstance(gen.get("code"), str):
        return "differential 'generator' needs 'code': trusted Python source that defines gen(rng, i) -> input"
    if not _int_in(gen.get("seed"), -(1 << 63), 1 << 63):
        return "differential 'generator.seed' must be an integer"
    if not _int_in(gen.get("count"), 1, MAX_INPUTS):
        return f"differential 'generator.count' must be an integer from 1 to {MAX_INPUTS}"
    return None


def _int_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def inputs_problem(inputs, mode: str, where: str) -> str | None:
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        return f"differential {where} must be a non-empty list of at most {MAX_INPUTS} inputs"
    for i, value in enumerate(inputs):
        if mode == "stdio" and not isinstance(value, str):
            return f"differential stdio {where} must each be a string (the script's stdin); input #{i} is not"
        if mode == "function" and not isinstance(value, (list, tuple)):
            return f"differential function {where} must each be a list of arguments; input #{i} is not"
        try:
            plain(value)
        except (TypeError, ValueError) as e:
            return f"differential {where}: input #{i} is not plain data ({e})"
    return None


def generate_inputs(sandbox: Sandbox, gen: dict, mode: str, limits: Limits) -> tuple[list | None, str, str]:
    """(inputs, status, message): the trusted generator's inputs, run alone in the sandbox; on
    failure None, `invalid_input` (or `sandbox_error`) and why."""
    files = {"driver.py": GENERATOR_DRIVER, "generator.py": gen["code"]}
    run = sandbox.run(files, ["python", "-I", "driver.py", str(gen["seed"]), str(gen["count"])], limits=limits,
                      channel=True)
    if run.sandbox_failed:
        return None, "sandbox_error", "the sandbox failed while running the generator"
    err = run.stderr[-600:].decode(errors="replace").strip()
    if run.returncode != 0 or run.output_exceeded or run.timed_out:
        why = failure_status(run) or "runtime_error"
        return None, "invalid_input", f"the inputs' generator failed ({why}): {err[-500:]}"
    try:
        inputs = PlainUnpickler(io.BytesIO(run.channel)).load()
    except Exception as e:  # noqa: BLE001 - not plain data, or nothing written
        return None, "invalid_input", f"the inputs' generator must return plain data: {type(e).__name__}: {e}"
    problem = inputs_problem(inputs, mode, "generated inputs")
    return (None, "invalid_input", problem) if problem else (inputs, "", "")


def _function_run(sandbox: Sandbox, program: str, entry: str, inputs: list, limits: Limits) -> list[dict]:
    """One harness run over every input: per input {"out": outcome} or {"status": failure}."""
    spec = {"mode": "function", "entry_points": [entry], "case_timeout_s": limits.timeout_s,
            "cases": [{"args": list(a), "kwargs": {}} for a in inputs]}
    run, records = _harness_run(sandbox, program, spec, limits)
    bad = _load_failure(records, run)
    if bad:
        detail = (records[0].get("detail") if records else None) or run.stderr[-1000:].decode(errors="replace")
        return [{"status": bad, "error": f"does not load: {str(detail)[:500]}"}] * len(inputs)
    results = []
    for i in range(len(inputs)):
        rec = records[1 + i] if 1 + i < len(records) else None
        if rec is None:  # the run ended (killed, timed out) before this input
            results.append({"status": failure_status(run) or ("timeout" if run.timed_out else "runtime_error"),
                            "error": "the run ended before this input"})
        elif rec["ok"]:
            results.append({"out": ("return", rec["value"])})
        elif rec.get("exc") == "MemoryError":
            results.append({"status": "memory_limit", "error": rec["error"][:300]})
        elif "exc" in rec:  # the program's own exception: an outcome like a value
            results.append({"out": ("raise", rec["exc"]), "error": rec["error"][:300]})
        else:
            results.append({"status": "timeout" if rec["error"] == "timeout" else "runtime_error",
                            "error": rec["error"][:300]})
    return results


_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_HEADER = "Traceback (most recent call last):"


def _stdio_one(sandbox: Sandbox, program: str, stdin: str, limits: Limits) -> dict:
    run = sandbox.run({"solution.py": program}, ["python", "-I", "solution.py"], stdin=stdin.encode(), limits=limits)
    err = run.stderr[-4000:].decode(errors="replace")
    status = failure_status(run)
    if status:
        return {"status": status, "error": err[-300:]}
    lines = normalise_lines(run.stdout.decode(errors="replace"))
    if run.returncode == 0:
        return {"out": ("return", lines)}
    # Negative: killed by a signal; 129-192: the same, reported by bwrap's init as 128 + signal.
    if run.returncode < 0 or 128 < run.returncode <= 192:
        sig = -run.returncode if run.returncode < 0 else run.returncode - 128
        return {"status": "runtime_error", "error": f"killed by signal {sig}: {err[-300:]}"}
    if _HEADER not in err:  # a compile error of the script itself has no traceback header
        if re.search(r"^(SyntaxError|IndentationError|TabError)\b", err, re.M):
            return {"status": "syntax_error", "error": err[-300:]}
        return {"out": ("exit", run.returncode, lines), "error": err[-300:]}
    # The exception line is the first unindented one after the last traceback header.
    tail = err.rsplit(_HEADER, 1)[1].splitlines()
    name = next((m.group(1) for line in tail if line and not line[0].isspace() for m in [_EXC_LINE.match(line)] if m),
                None)
    if name is None:
        return {"out": ("exit", run.returncode, lines), "error": err[-300:]}
    return {"out": ("raise", name.rsplit(".", 1)[-1], lines), "error": err[-300:]}


def _stdio_run(sandbox: Sandbox, program: str, inputs: list, limits: Limits) -> list[dict]:
    results = []
    for stdin in inputs:
        results.append(_stdio_one(sandbox, program, stdin, limits))
        if results[-1].get("status") == "syntax_error":  # it will not compile for the next input either
            return results + [results[-1]] * (len(inputs) - len(results))
    return results


def _same(a: tuple, b: tuple, rel_tol: float) -> bool:
    return a[0] == b[0] and values_equal(list(a[1:]), list(b[1:]), rel_tol)


def _short(value) -> str:
    return repr(value)[:200]


def _describe(outcome: tuple) -> str:
    """An outcome for the case record: a value, or how a script ended and what it printed."""
    kind, *rest = outcome
    printed = f" after printing {_short(rest[-1])}" if len(rest) == 2 and rest[-1] else ""
    if kind == "return":
        return _short(rest[0])
    if kind == "raise":
        return f"raises {rest[0]}{printed}"
    return f"exits with status {rest[0]}{printed}"


def _reference_problem(runs: list[list[dict]], inputs: list, entry: str | None, rel_tol: float) -> str | None:
    for i, value in enumerate(inputs):
        results = [run[i] for run in runs]
        where = f"the reference failed on input #{i} ({_short(value)})"
        for r in results:
            if "status" in r:
                return f"{where}: {r['status']}: {r.get('error', '')}"
            if r["out"][0] == "raise" and "is not defined by the program" in r.get("error", ""):
                return f"{where}: it does not define entry_point {entry!r}"
            if r["out"][0] == "raise" and "is not plain data" in r.get("error", ""):
                return f"{where}: it returned a value that is not plain data ({r['error']})"
        if any(not _same(r["out"], results[0]["out"], rel_tol) for r in results[1:]):
            seen = "; ".join(_describe(r["out"])[:100] for r in results)
            return f"the reference is nondeterministic on input #{i} ({_short(value)}): its runs gave {seen}"
    return None


def _compare(value, cand: list[dict], ref: dict, rel_tol: float) -> dict:
    failures = [r for r in cand if "status" in r]
    if failures:
        worst = min(failures, key=lambda r: SEVERITY.index(r["status"]))
        return {"status": worst["status"], "input": _short(value), "error": worst.get("error", "")[:300]}
    outs = [r["out"] for r in cand]
    if any(not _same(o, outs[0], rel_tol) for o in outs[1:]):
        return {"status": "failed", "input": _short(value), "nondeterministic": True,
                "error": f"the candidate gave different outputs on {len(outs)} runs of this input",
                "got": [_describe(o) for o in outs]}
    if _same(outs[0], ref["out"], rel_tol):
        return {"status": "passed"}
    case = {"status": "runtime_error" if outs[0][0] == "raise" else "failed", "input": _short(value),
            "got": _describe(outs[0]), "expected": _describe(ref["out"])}
    return case | ({"error": cand[0]["error"]} if "error" in cand[0] else {})


def run_differential_tests(sandbox: Sandbox, program: str, tests: dict, limits: Limits, rel_tol: float) -> CodeVerdict:
    start = time.perf_counter()
    mode, entry, repeat = tests.get("mode", "function"), tests.get("entry_point"), tests.get("repeat", 2)
    inputs = tests.get("inputs")
    if inputs is None:
        inputs, status, message = generate_inputs(sandbox, tests["generator"], mode, limits)
        if inputs is None:
            return _broken(status, message, start)
    if mode == "function":
        def runner(source):
            return _function_run(sandbox, source, entry, inputs, limits)
    else:
        def runner(source):
            return _stdio_run(sandbox, source, inputs, limits)

    ref_runs = _runs(runner, tests["reference"], repeat, reference=True)
    if any(r.get("status") == "sandbox_error" for run in ref_runs for r in run):
        return _broken("sandbox_error", "the sandbox failed while running the reference", start)
    problem = _reference_problem(ref_runs, inputs, entry, rel_tol)
    if problem:
        return _broken("invalid_input", problem, start)
    cand_runs = _runs(runner, program, repeat)
    cases = [_compare(inputs[i], [run[i] for run in cand_runs], ref_runs[0][i], rel_tol) for i in range(len(inputs))]
    return _verdict(cases, time.perf_counter() - start)


def _runs(runner, source: str, repeat: int, reference: bool = False) -> list[list[dict]]:
    """`repeat` independent runs; fewer when the first already settles it (a reference that
    failed, a candidate with no outcome at all to compare)."""
    runs = [runner(source)]
    settled = any("status" in r for r in runs[0]) if reference else all("status" in r for r in runs[0])
    while len(runs) < repeat and not settled:
        runs.append(runner(source))
    return runs


def _broken(status: str, message: str, start: float) -> CodeVerdict:
    return CodeVerdict(status, 0, 0, [], time.perf_counter() - start, error=message)
