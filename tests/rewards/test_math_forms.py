"""More math-checker verdicts: intervals, percent edge cases, LaTeX and equivalent forms."""
import threading

import pytest

from rewards.math.answer import MathChecker


@pytest.fixture(scope="module")
def checker():
    with MathChecker(timeout_s=5) as c:
        yield c


CASES = [
    # intervals: endpoints and brackets both matter
    (r"\boxed{(0, 1]}", "(0,1]", "passed"),
    (r"\boxed{[0, 1]}", "(0,1]", "failed"),
    (r"\boxed{(-\infty, 2)}", r"(-\infty,2)", "passed"),
    (r"\boxed{(-\infty, 3)}", r"(-\infty,2)", "failed"),
    (r"\boxed{(1,2) \cup (3,4)}", r"(1,2)\cup(3,4)", "passed"),
    (r"The answer is $[2, 5)$.", "[2,5)", "passed"),
    # percent: the sign is notation, the number must match
    (r"\boxed{50\%}", r"50\%", "passed"),
    (r"\boxed{50}", r"50\%", "passed"),
    (r"\boxed{50\%}", "50", "passed"),
    (r"\boxed{5\%}", r"50\%", "failed"),
    ("The answer is 12.5%", "12.5", "passed"),
    # equivalent forms
    (r"\boxed{\frac{3}{4}}", "0.75", "passed"),
    (r"\boxed{\dfrac{3}{4}}", r"\frac{3}{4}", "passed"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", "passed"),
    (r"\boxed{\sqrt{8}}", r"3\sqrt{2}", "failed"),
    (r"\boxed{2^{10}}", "1024", "passed"),
    (r"\boxed{x^2+2x+1}", "(x+1)^2", "passed"),
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}", "passed"),
    (r"\boxed{-\frac{1}{3}}", "-1/3", "passed"),
    (r"\boxed{\frac{1}{3}}", "-1/3", "failed"),
    (r"\boxed{1{,}000}", "1000", "passed"),
    (r"\boxed{3.0}", "3", "passed"),
    (r"\boxed{3.01}", "3", "failed"),
    (r"\boxed{x = 5}", "5", "passed"),
    # malformed or empty final answers never pass
    (r"\boxed{}", "0", "no_answer"),
    ("I cannot solve this.", "7", "no_answer"),
    (r"\boxed{\frac{1}{", "1/2", "failed"),
    ("=" * 5000, "5", "no_answer"),
]


@pytest.mark.parametrize("response,answer,status", CASES)
def test_verdict(checker, response, answer, status):
    result = checker.score([response], [answer])[0]
    assert result.status == status, (response, answer, result)
    assert result.score == (1.0 if status == "passed" else 0.0)


def test_whole_table_from_worker_threads(checker):
    """The same verdicts when four threads share the checker (as a Ray actor's threads do)."""
    results = {}

    def work(k):
        part = CASES[k::4]
        got = checker.score([c[0] for c in part], [c[1] for c in part])
        results[k] = [r.status for r in got] == [c[2] for c in part]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True, 2: True, 3: True}
