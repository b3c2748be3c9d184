"""Math-answer reward: extract a model's final answer and check it against the gold with math-verify.

`check_answer` scores one sample in the current process. `MathChecker` scores batches in a
persistent child process, so a sample that hangs sympy can be killed without hurting the caller
(math-verify's own timeouts use signal.alarm, which only works on the main thread).
"""
from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from rewards.types import ERROR, FAILED, NO_ANSWER, PASSED, TIMEOUT, RewardResult

MAX_RESPONSE_CHARS = 200_000  # longer responses are refused in the caller, never shipped to the child
MAX_ANSWER_CHARS = 1_000  # sympy on a longer "answer" is slow and never a real final answer
_GRACE_S = 2.0  # IPC slack on top of the per-sample budget before the child counts as hung
_START_TIMEOUT_S = 120.0  # a fresh interpreter importing sympy is slow on a busy machine
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_BOXED = re.compile(r"\\boxed\s*\{")
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is\s*:?|answer\s*:)", re.IGNORECASE)
# A digit or "." right before would make this the tail of another number; "1,000" needs exact groups.
_NUM = r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:/\d+)?"
_NUMBER = re.compile(_NUM)
_LEADING_NUMBER = re.compile(r"\s*(" + _NUM + r")")


def _balanced(text: str, start: int) -> str | None:
    """Content from `start` up to the brace closing an already-open `{`; None if never closed."""
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == "\\":  # skip escaped chars so \{ and \} do not count
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
        i += 1
    return None


def _last_boxed(text: str) -> str | None:
    # Only the last few \boxed are tried: each unbalanced one scans to the end of the text.
    for start in reversed([m.end() for m in _BOXED.finditer(text)][-10:]):
        content = _balanced(text, start)
        if content and content.strip():
            return content.strip()
    return None


def _after_answer_is(text: str) -> str | None:
    ends = [m.end() for m in _ANSWER_IS.finditer(text)]  # markers only: a later one on the line wins
    if not ends:
        return None
    line = text[ends[-1]:].split("\n", 1)[0]
    # Up to the sentence's end; "*" for markdown "**Answer:** 42".
    content = re.split(r"\.(?:\s|$)", line)[0].strip().strip("*").strip()
    if len(content) >= 2 and content[0] == content[-1] == "$":
        content = content[1:-1].strip()
    return content or None


def extract_answer(text: Any) -> str | None:
    """The final answer in a response: last \\boxed{}, else "the answer is"/"answer:", else a
    number after the last "=", else the last number. None if there is none (or text is not a str)."""
    if not isinstance(text, str) or not text:
        return None
    for rule in (_last_boxed, _after_answer_is):
        found = rule(text)
        if found:
            return found
    if "=" in text:
        m = _LEADING_NUMBER.match(text, text.rindex("=") + 1)
        if m:
            return m.group(1)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _as_math(s: str) -> str:
    """Wrap in $...$ so math-verify reads it as LaTeX: "46", "\\frac{1}{2}" and "1/2" all parse."""
    s = re.sub(r"(?<!\\)%", r"\\%", s)  # a bare % starts a LaTeX comment: "12.5%" would lose its tail
    return s if "$" in s or "\\boxed" in s else f"${s}$"


def _gold_str(answer: Any) -> str | None:
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # datasets often store numeric golds as numbers
    return answer if isinstance(answer, str) and answer.strip() else None


def check_answer(response: Any, answer: Any, timeout_s: float | None = 5.0) -> RewardResult:
    """Score one sample here. math-verify's timeouts are per call and need the main thread;
    with timeout_s=None (or off the main thread) the caller must bound the time itself."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    extracted, answer = extract_answer(response), _gold_str(answer)
    detail: dict[str, Any] = {"extracted": extracted}
    if extracted is None:
        return RewardResult(0.0, NO_ANSWER, detail)
    if len(extracted) > MAX_ANSWER_CHARS:
        return RewardResult(0.0, ERROR, {"extracted": extracted[:100] + "...", "error": "answer too long"})
    if answer is None:
        return RewardResult(0.0, ERROR, {**detail, "error": "gold answer missing or not a string"})
    on_main = threading.current_thread() is threading.main_thread()
    t = max(1, math.ceil(timeout_s)) if timeout_s and on_main else None
    try:
        gold = parse(_as_math(answer), parsing_timeout=t, raise_on_error=True)
        if not gold:
            return RewardResult(0.0, ERROR, {**detail, "error": f"cannot parse gold {answer[:100]!r}"})
        pred = parse(_as_math(extracted), parsing_timeout=t, raise_on_error=True)
        ok = bool(pred) and verify(gold, pred, timeout_seconds=t, raise_on_error=True)
        if not ok and pred and "%" in answer + extracted:
            # math-verify reads 12.5% as 0.125 but "12.5" as 12.5; a percent sign is notation here.
            bare = [parse(_as_math(x.replace("\\%", "").replace("%", "")), parsing_timeout=t) for x in (answer, extracted)]
            ok = all(bare) and verify(bare[0], bare[1], timeout_seconds=t, raise_on_error=True)
    except TimeoutException:
        return RewardResult(0.0, TIMEOUT, detail)
    except Exception as e:  # math-verify/sympy may raise anything on odd input
        return RewardResult(0.0, ERROR, {**detail, "error": f"{type(e).__name__}: {e}"[:500]})
    return RewardResult(1.0, PASSED, detail) if ok else RewardResult(0.0, FAILED, detail)


_PLAIN_INT = re.compile(r"-?[0-9]{1,30}")  # ASCII only: int() reads "٤٦" and "４６" too, math-verify does not


def plain_verdict(response: str, gold: str) -> RewardResult | None:
    """The verdict without sympy when the extracted answer and the gold are both plain integers
    ("46", "-3", "007"): math-verify would compare their values, and so does this, in microseconds
    instead of a round trip to the checker process. None for everything else."""
    extracted = extract_answer(response)
    if extracted is None or not _PLAIN_INT.fullmatch(extracted) or not _PLAIN_INT.fullmatch(gold.strip()):
        return None
    ok = int(extracted) == int(gold.strip())
    return RewardResult(1.0 if ok else 0.0, PASSED if ok else FAILED, {"extracted": extracted})


def _fail(status: str, why: str) -> RewardResult:
    return RewardResult(0.0, status, {"extracted": None, "error": why})


def _serve(fd: int, timeout_s: float) -> None:
    """Child loop: one batch in, one (index, result) out per sample as soon as it is done,
    so the parent knows exactly which sample it was on if we hang."""
    from math_verify.errors import TimeoutException

    def on_alarm(signum, frame):
        raise TimeoutException("sample budget exceeded")

    def exit_with_parent(ppid: int = os.getppid()) -> None:
        while os.getppid() == ppid:  # a killed parent cannot close our pipe if we are busy
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # silence "timeout is disabled"
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    conn = Connection(fd)
    check_answer(r"\boxed{1}", "1", timeout_s=None)  # warm up sympy/antlr before saying ready
    conn.send("ready")
    while True:
        try:
            batch = conn.recv()
        except (EOFError, OSError):
            return  # parent closed the pipe
        for idx, response, answer in batch:
            # One timer for the whole sample; math-verify's own alarm would cancel ours, so off.
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                result = check_answer(response, answer, timeout_s=None)
            except TimeoutException:
                result = RewardResult(0.0, TIMEOUT, {"extracted": None})
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            conn.send((idx, result))


class MathChecker:
    """Batch math checking in a persistent child process; safe to call from any thread."""

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = float(timeout_s)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> bool:
        # A fresh interpreter (fork+exec), not multiprocessing: no fork of a multi-threaded
        # actor, and no re-import of the caller's __main__ as multiprocessing's spawn does.
        ours, theirs = socket.socketpair()
        code = "import sys; from rewards.math.answer import _serve; _serve(int(sys.argv[1]), float(sys.argv[2]))"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_REPO_ROOT, os.environ.get("PYTHONPATH")]))}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", code, str(theirs.fileno()), str(self.timeout_s)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except OSError:
            ours.close()
            return False
        finally:
            theirs.close()  # so we see EOF when the child dies
        self._conn = Connection(ours.detach())
        try:
            if self._conn.poll(_START_TIMEOUT_S) and self._conn.recv() == "ready":
                return True
        except (EOFError, OSError):
            pass
        self._stop()
        return False

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = self._conn = None

    def _run(self, items: list[tuple]) -> tuple[dict[int, RewardResult], str]:
        """Send a batch; collect results until done, the child dies ("died") or goes quiet for
        longer than one sample's budget ("hung"). On any failure the child is killed."""
        if self._proc is None or self._proc.poll() is not None:
            self._stop()
            if not self._start():
                return {}, "failed to start"
        got: dict[int, RewardResult] = {}
        try:
            self._conn.send(items)
            while len(got) < len(items):
                if not self._conn.poll(self.timeout_s + _GRACE_S):
                    self._stop()
                    return got, "hung"
                idx, result = self._conn.recv()
                got[idx] = result
        except Exception:  # EOF, broken pipe, garbled message: the child is gone either way
            self._stop()
            return got, "died"
        return got, ""

    def score(self, responses: list, answers: list) -> list[RewardResult]:
        """One RewardResult per (response, gold answer) pair, in order; never raises per sample."""
        if len(responses) != len(answers):
            raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
        results: list[RewardResult | None] = [None] * len(responses)
        items = []
        for i, (r, a) in enumerate(zip(responses, answers)):
            # Settle what needs no sympy here; only plain, bounded strings cross the pipe.
            if not isinstance(r, str):
                results[i] = _fail(NO_ANSWER, "response is not a str")
            elif len(r) > MAX_RESPONSE_CHARS:
                results[i] = _fail(ERROR, "response too long")
            elif _gold_str(a) is None:
                results[i] = _fail(ERROR, "gold answer missing or not a string")
            else:
                results[i] = plain_verdict(str(r), str(_gold_str(a)))
                if results[i] is None:
                    items.append((i, str(r), str(_gold_str(a))))  # str(): subclasses may not unpickle there
        with self._lock:
            got, why = self._run(items) if items else ({}, "")
            # Whatever the batch left unanswered is retried alone, so only a bad sample times out.
            for item in items:
                if item[0] not in got and why != "failed to start":
                    one, why = self._run([item])
                    got.update(one)
                if item[0] not in got:
                    got[item[0]] = _fail(TIMEOUT if why == "hung" else ERROR, f"checker {why}")
        for i, result in got.items():
            results[i] = result
        return results  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            self._stop()

    def __enter__(self) -> MathChecker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            self._proc.kill()
