"""Judge reply parsing (strict: anything else abstains), log-prob P(first), swap rule, voting, config."""
import math

import pytest
from pydantic import ValidationError

from rewards.judge.config import EnsembleConfig, JudgeSpec
from rewards.judge.metrics import JudgeStats, percentile
from rewards.judge.parse import normalise_score, p_first, parse_score, parse_verdict
from rewards.judge.vote import OrderVerdict, Vote, combine, pair_vote


@pytest.mark.parametrize("text, want", [
    ("A is clearer and correct.\nVerdict: [[A]]", "A"),
    ("B cites the right law.\n\nVerdict: [[B]]\n\n", "B"),
    ("Both are equally good.\nVerdict:[[tie]]", "tie"),
    ("  Verdict: [[A]]  ", "A"),
])
def test_verdict_lines_that_count(text, want):
    assert parse_verdict(text).value == want


@pytest.mark.parametrize("text, finish, why", [
    ("I think A is better, definitely A.", "stop", "last line"),
    ("Verdict: [[A]]\nThough on reflection B has merit.", "stop", "last line"),
    ("Verdict: [[A]]\nVerdict: [[B]]", "stop", "more than one"),
    ("A says [[B]] is wrong.\nVerdict: [[A]]", "stop", "more than one"),
    ("verdict: [[a]]", "stop", "last line"),
    ("**Verdict: [[A]]**", "stop", "last line"),
    ("Verdict: [[C]]", "stop", "last line"),
    ("Verdict: [[A]", "stop", "last line"),
    ("Verdict: A", "stop", "last line"),
    ("Reasoning...\nVerdict: [[A]]", "length", "cut off"),
    ("", "stop", "empty"),
    (None, "stop", "empty"),
])
def test_everything_else_abstains(text, finish, why):
    parsed = parse_verdict(text, finish)
    assert parsed.value is None and why in parsed.reason


@pytest.mark.parametrize("text, want", [("Score: [[7]]", 7), ("ok\nScore: [[10]]", 10), ("Score: [[1]]", 1),
                                        ("Score: [[0]]", None), ("Score: [[11]]", None), ("Score: [[7.5]]", None),
                                        ("Score: [[07]]", None), ("Score: 7", None), ("Verdict: [[A]]", None)])
def test_scores_parse_strictly(text, want):
    assert parse_score(text).value == want


def test_score_normalisation():
    assert normalise_score(1) == 0.0 and normalise_score(10) == 1.0
    assert normalise_score(7) == pytest.approx(6 / 9, abs=1e-12)


def _chars(text, at=None, alts=()):
    """Char-level tokens with log-prob 0, except at index `at`: alternatives `alts` (token, prob)."""
    lps = {t: math.log(p) for t, p in alts}
    return [(c, lps[c], tuple(lps.items())) if i == at else (c, 0.0, ((c, 0.0),)) for i, c in enumerate(text)]


def test_p_first_from_the_verdict_token():
    text = "ok\nVerdict: [[A]]"
    at = text.index("[[") + 2
    parsed = parse_verdict(text)
    assert parsed.offset == at
    # A 0.6, B 0.2 (the rest elsewhere): P(first) = 0.6 / 0.8 = 0.75
    assert p_first(text, _chars(text, at, [("A", 0.6), ("B", 0.2), ("C", 0.2)]), at) == pytest.approx(0.75, abs=1e-12)
    assert p_first(text, _chars(text, at, [("A", 0.6), ("tie", 0.4)]), at) == pytest.approx(1.0, abs=1e-12)
    tie = "ok\nVerdict: [[tie]]"
    assert p_first(tie, _chars(tie, at, [("t", 0.9), ("x", 0.1)]), at) is None  # neither A nor B offered
    assert p_first(text, None, at) is None


def test_p_first_skips_special_tokens_and_reads_subword_tokens():
    text = "fine\nVerdict: [[B]]"
    # vLLM lists <pad> and </s> among the log-probs although the content leaves them out.
    tokens = [("fine", 0.0, ()), ("<pad>", -1.0, ()), ("\nVerdict:", 0.0, ()), (" [[", 0.0, ()),
              ("B", math.log(0.3), ((" A", math.log(0.6)), ("B", math.log(0.3)))), ("]]", 0.0, ()), ("</s>", 0.0, ())]
    assert p_first(text, tokens, parse_verdict(text).offset) == pytest.approx(0.6 / 0.9, abs=1e-12)
    assert p_first(text, [("something else", 0.0, ())], parse_verdict(text).offset) is None


def test_swap_rule():
    # The judge prefers the answer shown first both times: the orders name different answers → tie.
    assert pair_vote("j", 1.0, OrderVerdict("A"), OrderVerdict("A")).winner == "tie"
    # (A,B) says A; (B,A) says the second, which is A again → A stands, P(A) = 1 from the verdicts.
    v = pair_vote("j", 1.0, OrderVerdict("A"), OrderVerdict("B"))
    assert (v.winner, v.p_a) == ("A", 1.0)
    assert pair_vote("j", 1.0, OrderVerdict("tie"), OrderVerdict("tie")).winner == "tie"
    gone = pair_vote("j", 1.0, OrderVerdict("A"), OrderVerdict(None, reason="timeout"))
    assert gone.winner == "abstain" and gone.p_a is None and "B first: timeout" in gone.reason


def test_p_a_averages_both_orders():
    # (A,B): P(first = A) = 0.8. (B,A): P(first = B) = 0.3, so P(A) = 0.7. Mean 0.75.
    v = pair_vote("j", 1.0, OrderVerdict("A", 0.8), OrderVerdict("B", 0.3))
    assert v.winner == "A" and v.p_a == pytest.approx(0.75, abs=1e-12)
    # No log-probs in the second order: its verdict counts as P(A) = 1 → (0.8 + 1) / 2.
    assert pair_vote("j", 1.0, OrderVerdict("A", 0.8), OrderVerdict("B")).p_a == pytest.approx(0.9, abs=1e-12)


def _votes(*spec):
    return [Vote(f"j{i}", w, winner, p) for i, (winner, w, p) in enumerate(spec)]


def test_majority_and_weighted_voting():
    assert combine(_votes(("A", 1, 1.0), ("A", 1, 1.0), ("B", 1, 0.0)), "majority")[0] == "A"
    assert combine(_votes(("A", 1, 1.0), ("B", 1, 0.0)), "majority")[0] == "tie"
    assert combine(_votes(("A", 1, 1.0), ("B", 1, 0.0), ("tie", 1, 0.5)), "majority")[0] == "tie"
    # abstentions do not vote: one A against two abstentions is A
    assert combine(_votes(("A", 1, 1.0), ("abstain", 1, None), ("abstain", 1, None)), "majority") == ("A", 1.0)
    assert combine(_votes(("abstain", 1, None)), "majority") == ("abstain", None)
    heavy = _votes(("A", 3, 1.0), ("B", 1, 0.0), ("B", 1, 0.0))
    assert combine(heavy, "majority")[0] == "B"
    winner, p = combine(heavy, "weighted")
    assert winner == "A" and p == pytest.approx(3 / 5, abs=1e-12)  # weighted mean P(A) = (3·1 + 0 + 0) / 5


def test_mean_prob_voting():
    # P(A) = (0.9 + 0.2 + 0.4) / 3 = 0.5 exactly → tie; weights 2,1,1 → (1.8 + 0.6) / 4 = 0.6 → A
    assert combine(_votes(("A", 1, 0.9), ("B", 1, 0.2), ("B", 1, 0.4)), "mean_prob")[0] == "tie"
    winner, p = combine(_votes(("A", 2, 0.9), ("B", 1, 0.2), ("B", 1, 0.4)), "mean_prob")
    assert winner == "A" and p == pytest.approx(0.6, abs=1e-12)
    assert combine(_votes(("A", 2, 0.9), ("B", 1, 0.2), ("B", 1, 0.4)), "mean_prob", tie_band=0.15)[0] == "tie"


def test_config_errors_say_what_to_change():
    judge = {"base_url": "http://127.0.0.1:1/v1", "model": "m"}
    with pytest.raises(ValidationError, match="missing {response_b}"):
        EnsembleConfig(judges=[judge], pairwise_template="{prompt} {response_a}")
    with pytest.raises(ValidationError, match=r"unknown placeholder\(s\) \{answer\}"):
        EnsembleConfig(judges=[judge], pointwise_template="{prompt} {response} {answer}")
    with pytest.raises(ValidationError, match="'m' repeats; set a distinct `name`"):
        EnsembleConfig(judges=[judge, judge])
    with pytest.raises(ValidationError, match="must start with http"):
        JudgeSpec(base_url="127.0.0.1:8000", model="m")
    with pytest.raises(ValidationError) as e:
        JudgeSpec(base_url="http://x", model="m", api_key_env="sk-live-abc123")
    assert "sk-live-abc123" not in str(e.value) and "never put the key itself" in str(e.value)
    assert JudgeSpec(base_url="http://x/v1/", model="m").name == "m"


def test_cost_and_percentiles():
    spec = JudgeSpec(base_url="http://x", model="m", price_per_1k_tokens=0.5, price_per_1k_output_tokens=2.0)
    assert spec.cost(3000, 500) == pytest.approx(1.5 + 1.0, abs=1e-12)
    assert percentile(list(range(1, 101)), 50) == 50 and percentile(list(range(1, 101)), 95) == 95
    assert percentile([0.3], 95) == 0.3 and percentile([], 50) is None
    a, b = JudgeStats(calls=3, errors=1), JudgeStats(calls=1, abstains=1)
    a.latencies.extend([0.1, 0.2])
    m = a.merge(b)
    assert (m.calls, m.errors, m.abstains, list(m.latencies)) == (4, 1, 1, [0.1, 0.2])
