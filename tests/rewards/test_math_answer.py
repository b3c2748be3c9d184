"""Math-answer extraction, in-process checking and the child-process MathChecker."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rewards.math.answer import MathChecker, check_answer, extract_answer
from rewards.types import ERROR, FAILED, NO_ANSWER, PASSED, TIMEOUT

pytestmark = pytest.mark.timeout(300)

# A power tower sympy grinds on in Python code for far longer than any budget.
PATHOLOGICAL = r"\boxed{10^{10^{10}}}"


@pytest.fixture(scope="module")
def checker():
    with MathChecker(timeout_s=2.0) as c:
        yield c


@pytest.mark.parametrize(
    "text, expected",
    [
        # \boxed wins, last one, nested and escaped braces
        (r"so the result is \boxed{42}.", "42"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1}, corrected: \boxed{2}", "2"),
        (r"\boxed{\sqrt{\frac{a}{b}}} and more text 7", r"\sqrt{\frac{a}{b}}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed{ 7 }", "7"),
        (r"The answer is 3 but \boxed{4}", "4"),
        # "the answer is" / "answer:"
        ("The answer is 42.", "42"),
        ("THE ANSWER IS -3", "-3"),
        ("Answer: 3.14", "3.14"),
        ("**Answer:** 12", "12"),
        (r"The answer is $\frac{3}{4}$.", r"\frac{3}{4}"),
        ("The final answer is 8", "8"),
        ("The answer is: 8", "8"),
        ("the answer is 5.\nThen we check 7", "5"),
        ("The answer is 6. Because 2 * 3 = 6 and 9", "6"),
        ("the answer is 1 then answer: 2", "2"),
        # a number after the last "="
        ("2 + 3 = 5", "5"),
        ("x = -2.5, done with 9 steps", "-2.5"),
        ("a = 1 and b = 3/4 here", "3/4"),
        ("so 3x = y", "3"),
        # the last number
        ("I have 3 apples and 4 pears", "4"),
        ("The total is 1,000 dollars", "1,000"),
        ("it costs 1,234,567.89 in all", "1,234,567.89"),
        ("about 3/4 of them", "3/4"),
        ("temperature -7 today", "-7"),
        ("5-3", "3"),
        ("0.25 percent", "0.25"),
        # malformed outputs
        ("", None),
        (None, None),
        (42, None),
        (b"\\boxed{5}", None),
        ("only letters here", None),
        (r"\boxed{12", "12"),  # unbalanced: falls through to the last number
        (r"\boxed{}", None),
        ("\x00\xff\ud800garbage 9", "9"),
        ("x" * 100_000, None),
        ("a" * 100_000 + r"\boxed{5}", "5"),
        (r"\boxed{" * 5_000, None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "response, answer, score, status",
    [
        (r"\boxed{46}", "46", 1.0, PASSED),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0, PASSED),
        ("The answer is 1/2", "0.5", 1.0, PASSED),
        (r"\boxed{\dfrac{1}{2}}", "1/2", 1.0, PASSED),
        (r"\boxed{\frac{2}{4}}", "0.5", 1.0, PASSED),
        ("so x = 1,000", "1000", 1.0, PASSED),
        (r"\boxed{\sqrt{2}}", "2^{1/2}", 1.0, PASSED),
        (r"\boxed{\pi}", r"\pi", 1.0, PASSED),
        (r"\boxed{x = 5}", "5", 1.0, PASSED),
        (r"\boxed{-3}", "-3", 1.0, PASSED),
        (r"\boxed{5}", 5, 1.0, PASSED),  # numeric gold
        (r"\boxed{12", "12", 1.0, PASSED),
        ("y" * 99_990 + r" \boxed{7}", "7", 1.0, PASSED),
        (r"\boxed{-3}", "3", 0.0, FAILED),
        ("The answer is 47", "46", 0.0, FAILED),
        (r"\boxed{0.51}", r"\frac{1}{2}", 0.0, FAILED),
        (r"\boxed{\sqrt{3}}", r"\sqrt{2}", 0.0, FAILED),
        ("I don't know", "46", 0.0, NO_ANSWER),
        ("", "46", 0.0, NO_ANSWER),
        (None, "46", 0.0, NO_ANSWER),
        (12, "12", 0.0, NO_ANSWER),
        ("\x00\xff\ud800", "1", 0.0, NO_ANSWER),
        ("x" * 100_000, "1", 0.0, NO_ANSWER),
        ("1" * 100_000, "1", 0.0, ERROR),  # a 100k-digit "answer" is refused, not parsed
        ("z" * 300_000, "1", 0.0, ERROR),  # over MAX_RESPONSE_CHARS
        (r"\boxed{5}", None, 0.0, ERROR),
        (r"\boxed{5}", "", 0.0, ERROR),
    ],
)
def test_checker_verdicts(checker, response, answer, score, status):
    [result] = checker.score([response], [answer])
    assert (result.score, result.status) == (score, status)
    assert "extracted" in result.detail


@pytest.mark.parametrize(
    "response, answer, status, extracted",
    [
        (r"\boxed{\frac{1}{2}}", "0.5", PASSED, r"\frac{1}{2}"),
        ("The answer is 0.5", r"\frac{1}{2}", PASSED, "0.5"),
        ("We get 1,000 apples", "1000", PASSED, "1,000"),
        ("The answer is 47", "46", FAILED, "47"),
        ("no idea", "46", NO_ANSWER, None),
        (None, "46", NO_ANSWER, None),
        (r"\boxed{5}", None, ERROR, "5"),
    ],
)
def test_check_answer_in_process(response, answer, status, extracted):
    result = check_answer(response, answer)
    assert result.status == status
    assert result.score == (1.0 if status == PASSED else 0.0)
    assert result.detail["extracted"] == extracted


def test_check_answer_in_process_timeout():
    # On the main thread math-verify's own alarm bounds each parse/verify call.
    result = check_answer(PATHOLOGICAL, "5", timeout_s=1)
    assert (result.score, result.status, result.detail["extracted"]) == (0.0, TIMEOUT, "10^{10^{10}}")


def test_check_answer_off_main_thread():
    # math-verify's signal-based timeouts cannot run here; check_answer must switch them off.
    out = []
    t = threading.Thread(target=lambda: out.append(check_answer(r"\boxed{\frac{1}{2}}", "0.5")))
    t.start()
    t.join(60)
    assert [(r.score, r.status) for r in out] == [(1.0, PASSED)]


def test_score_from_non_main_thread(checker):
    out = {}
    t = threading.Thread(target=lambda: out.update(r=checker.score([r"\boxed{2}", r"\boxed{3}"], ["2", "4"])))
    t.start()
    t.join(120)
    assert [(r.score, r.status) for r in out["r"]] == [(1.0, PASSED), (0.0, FAILED)]


def test_batch_of_256(checker):
    responses = [rf"step {i}: \boxed{{{i}.0}}" for i in range(256)]  # not plain integers: math-verify's child
    answers = [str(i if i % 2 == 0 else i + 1) for i in range(256)]
    results = checker.score(responses, answers)
    assert [r.status for r in results] == [PASSED if i % 2 == 0 else FAILED for i in range(256)]
    assert [r.score for r in results] == [1.0 if i % 2 == 0 else 0.0 for i in range(256)]
    assert [r.detail["extracted"] for r in results] == [f"{i}.0" for i in range(256)]


def test_one_pathological_sample_times_out_alone(checker):
    results = checker.score([r"\boxed{1}", PATHOLOGICAL, "The answer is 3", r"\boxed{9}"], ["1", "5", "3", "8"])
    assert [(r.score, r.status) for r in results] == [(1.0, PASSED), (0.0, TIMEOUT), (1.0, PASSED), (0.0, FAILED)]


def test_child_restarted_after_kill(checker):
    checker.score([r"\boxed{1.0}"], ["1"])  # make sure a child is running (plain integers never reach it)
    old = checker.pid
    os.kill(old, signal.SIGKILL)
    results = checker.score([r"\boxed{1.0}", "x = 2.0", "the answer is 4.0"], ["1", "2", "5"])
    assert [(r.score, r.status) for r in results] == [(1.0, PASSED), (1.0, PASSED), (0.0, FAILED)]
    assert checker.pid not in (None, old)


def test_hung_child_is_killed_and_batch_retried(checker):
    checker.score([r"\boxed{1.0}"], ["1"])
    old = checker.pid
    os.kill(old, signal.SIGSTOP)  # frozen child: no crash, no answer, must hit the deadline
    start = time.monotonic()
    results = checker.score([r"\boxed{1.0}", r"\boxed{2.0}", r"\boxed{3.0}"], ["1", "2", "4"])
    assert [(r.score, r.status) for r in results] == [(1.0, PASSED), (1.0, PASSED), (0.0, FAILED)]
    assert checker.pid not in (None, old)
    assert time.monotonic() - start < 120


def test_length_mismatch_raises(checker):
    with pytest.raises(ValueError):
        checker.score(["1"], [])


def test_empty_batch(checker):
    assert checker.score([], []) == []


def test_close_stops_child():
    with MathChecker(timeout_s=2.0) as c:
        assert c.score([r"\boxed{1.0}"], ["1"])[0].status == PASSED
        pid = c.pid
    assert c.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


PLAIN_CASES = [("46", "46"), ("47", "46"), (r"\boxed{-3}", "-3"), (r"\boxed{-3}", "3"), ("007", "7"), ("-0", "0"),
               ("so x = 12", "12"), ("The answer is 100", "1000"), ("123456789012345678901234567890",
                                                                  "123456789012345678901234567890"),
               ("123456789012345678901234567891", "123456789012345678901234567890"), ("12", " 12 "),
               ("1+2=3", "3"), ("9", "10"), ("12%", "12")]


@pytest.mark.parametrize("response, answer", PLAIN_CASES)
def test_plain_integer_fast_path_agrees_with_math_verify(response, answer):
    from rewards.math.answer import plain_verdict

    fast, slow = plain_verdict(response, answer), check_answer(response, answer)
    assert fast is not None, "a plain integer pair takes the fast path"
    assert (fast.score, fast.status, fast.detail) == (slow.score, slow.status, slow.detail)


@pytest.mark.parametrize("response, answer", [(r"\boxed{0.5}", r"\frac{1}{2}"), ("46.0", "46"), ("1,000", "1000"),
                                              ("46", "46.0"), (r"\boxed{\pi}", r"\pi"), ("1/2", "0.5"),
                                              ("1" * 31, "1" * 31), ("no idea", "46"),
                                              ("the answer is 5 apples", "5")])
def test_anything_else_goes_to_math_verify(response, answer):
    from rewards.math.answer import plain_verdict

    assert plain_verdict(response, answer) is None


def test_a_plain_batch_needs_no_checker_process():
    with MathChecker(timeout_s=5.0) as fresh:
        got = fresh.score(["46", r"\boxed{45}", "the answer is 46"], ["46", "46", "46"])
        assert [r.status for r in got] == [PASSED, FAILED, PASSED] and fresh.pid is None
        [mixed] = fresh.score([r"\boxed{\frac{1}{2}}"], ["0.5"])
        assert mixed.status == PASSED and fresh.pid is not None  # math-verify ran in its child


@pytest.mark.parametrize("response", ["٤٦", "４６", "x = ٤٦", r"\boxed{４６}"])
def test_look_alike_digits_get_no_fast_pass(response):
    """A policy fishing for reward with digits that int() reads but math-verify refuses must get
    math-verify's verdict, not a pass from the fast path; the honest "46" still passes there."""
    from rewards.math.answer import plain_verdict

    assert plain_verdict(response, "46") is None
    with MathChecker(timeout_s=5.0) as fresh:
        [cheat, honest] = fresh.score([response, "46"], ["46", "46"])
    assert cheat.score == 0.0 and cheat.status == check_answer(response, "46").status
    assert (honest.score, honest.status) == (1.0, PASSED)
