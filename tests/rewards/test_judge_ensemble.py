"""Ensemble behaviour against scripted test-double judges: position bias, ensemble gain, metrics,
and the judge rewards (vs a reference, group win rate, pointwise)."""
import random
import re

import pytest

from rewards.judge.reward import JUDGED, group_rewards, pointwise_rewards, reference_rewards
from tests.doubles.openai_double import OpenAIDouble, Reply, by_model
from tests.doubles.judge_helpers import GOOD, ensemble, pairs, prefers, run

SCRIPTS: dict = {}
ACCURACY = 0.7
N_PAIRS = 600


@pytest.fixture(scope="module")
def srv():
    with OpenAIDouble(by_model(SCRIPTS)) as server:
        yield server


def noisy_judge(seed: int):
    """Picks the truly better response ("good #k") with probability 0.7, decided once per pair and
    judge (independent across judges, the same in both orders, so the swap rule keeps the vote)."""
    def script(seen) -> Reply:
        text = seen.user
        k = re.search(r"#(\d+)", text).group(1)
        right = random.Random(f"{seed}-{k}").random() < ACCURACY
        pick = "good" if right else "bad"
        first = text[text.index("[Response A]"):text.index("[Response B]")]
        return Reply(GOOD.format("A" if pick in first else "B"))
    return script


def test_position_bias_gives_ties_not_a_winner(srv):
    SCRIPTS["first-lover"] = lambda seen: Reply("The first one reads well.\nVerdict: [[A]]")
    ens = ensemble(srv.base_url, "first-lover")
    verdicts = pairs(ens, [(f"q{i}", f"answer {i}", f"other {i}") for i in range(20)])
    assert [v.winner for v in verdicts] == ["tie"] * 20
    assert all(v.p_a == 0.5 for v in verdicts)
    m = ens.metrics()["first-lover"]
    assert m["first_position_rate"] == 1.0 and m["agreement"] == 1.0 and m["abstain_rate"] == 0.0


def test_ensemble_beats_each_judge(srv):
    for s in range(3):
        SCRIPTS[f"noisy{s}"] = noisy_judge(s)
    ens = ensemble(srv.base_url, "noisy0", "noisy1", "noisy2", judge={"max_concurrency": 64})
    rng = random.Random(0)
    truth = [rng.choice("AB") for _ in range(N_PAIRS)]
    rows = [(f"q{k}", f"good #{k}", f"bad #{k}") if t == "A" else (f"q{k}", f"bad #{k}", f"good #{k}")
            for k, t in enumerate(truth)]
    verdicts = pairs(ens, rows)
    single = [sum(v.votes[j].winner == t for v, t in zip(verdicts, truth)) / N_PAIRS for j in range(3)]
    together = sum(v.winner == t for v, t in zip(verdicts, truth)) / N_PAIRS
    print(f"\nensemble gain over {N_PAIRS} pairs: single judges {[f'{a:.3f}' for a in single]}, "
          f"majority of 3 {together:.3f} (theory 0.700 vs 0.784)")
    # Each judge: 0.7 ± 0.019 (1 s.d. at n=600). Majority of three independent 0.7s: 0.784 ± 0.017.
    assert all(0.64 <= a <= 0.76 for a in single)
    assert together >= max(single) + 0.04
    assert 0.73 <= together <= 0.84
    agreement = [m["agreement"] for m in ens.metrics().values()]
    # A judge is in the majority when right and another is right (0.7 · 0.91), or when wrong and
    # another is wrong (0.3 · 0.51): 0.79 in theory, ± 0.017 at n=600.
    assert all(0.74 <= a <= 0.84 for a in agreement)
    # 50/50 placement of the better answer: an unbiased judge picks the first shown about half the time.
    assert all(0.44 <= m["first_position_rate"] <= 0.56 for m in ens.metrics().values())


def test_reference_rewards(srv):
    SCRIPTS["likes-right"] = prefers("right")
    ens = ensemble(srv.base_url, "likes-right")
    got = run(ens, reference_rewards(ens, ["q", "q", "q"], ["the right one", "nope", 42], ["meh", "right ref", "x"]))
    assert [(r.score, r.status) for r in got[:2]] == [(1.0, JUDGED), (0.0, JUDGED)]
    assert got[0].detail["winner"] == "A" and got[1].detail["winner"] == "B"
    assert got[2].status == "error" and "response is not a str" in got[2].detail["error"]
    assert len(srv.seen_by("likes-right")) == 4  # the bad sample was never sent


def test_a_sample_identical_to_its_reference_ties_without_a_call(srv):
    SCRIPTS["likes-first"] = lambda seen: Reply(GOOD.format("A"))  # would reward whichever is shown first
    ens = ensemble(srv.base_url, "likes-first")
    got = run(ens, reference_rewards(ens, ["q", "q"], [" 46\n", "47"], ["46", "46"]))
    assert (got[0].score, got[0].status, got[0].detail["identical"]) == (0.5, JUDGED, True)
    assert got[1].score == 0.5 and got[1].detail["winner"] == "tie"  # the swap rule: A then A is a tie
    assert len(srv.seen_by("likes-first")) == 2  # only "47" was sent, in both orders


def test_group_win_rates(srv):
    # Quality is the number of "+" signs: the judge prefers more; equal counts → it says tie.
    def plus_counter(seen):
        text = seen.user
        a, b = text.index("[Response A]"), text.index("[Response B]")
        na, nb = text[a:b].count("+"), text[b:].count("+")
        return Reply(GOOD.format("A" if na > nb else "B" if nb > na else "tie"))
    SCRIPTS["plus"] = plus_counter
    ens = ensemble(srv.base_url, "plus")
    responses = ["+++", "+", "++", "+", "lonely", None]
    got = run(ens, group_rewards(ens, ["p"] * 6, responses, [0, 0, 0, 0, 1, 1]))
    # +++ beats all 3 → 1; "+" beats nobody, ties the other "+" → 0.5/3; ++ beats two "+" → 2/3.
    assert [r.score for r in got[:4]] == pytest.approx([1.0, 0.5 / 3, 2 / 3, 0.5 / 3], abs=1e-12)
    assert got[1].detail["ties"] == 1 and got[1].detail["losses"] == 2
    assert got[4].status == "abstain" and got[4].detail["reason"] == "no other sample in the group"
    assert got[5].status == "error"
    # C(4, 2) = 6 pairs, but "+" vs "+" ties without a call and the two "+++ vs +" and "++ vs +" pairs
    # are asked once each: 3 distinct pairs in both orders; the lone and bad samples send nothing
    assert len(srv.seen_by("plus")) == 2 * 3


def test_pointwise_rewards(srv):
    def scorer(seen):
        n = seen.user.count("*")
        return Reply(f"Rated.\nScore: [[{n}]]") if 1 <= n <= 10 else Reply("Cannot rate this.")
    SCRIPTS["scorer-a"] = scorer
    SCRIPTS["scorer-b"] = lambda seen: Reply("Solid.\nScore: [[10]]")
    ens = ensemble(srv.base_url, "scorer-a", "scorer-b", judge={"weight": 1.0})
    got = run(ens, pointwise_rewards(ens, ["q", "q"], ["****", "no stars"]))
    # "****": (4-1)/9 and (10-1)/9 → mean (1/3 + 1) / 2 = 2/3. "no stars": scorer-a abstains → 1.0.
    assert got[0].score == pytest.approx(2 / 3, abs=1e-12) and got[0].status == JUDGED
    assert got[1].score == 1.0 and [v["winner"] for v in got[1].detail["votes"]] == ["abstain", "score"]


def test_repeated_samples_are_judged_once(srv):
    SCRIPTS["counted"] = prefers("right")
    ens = ensemble(srv.base_url, "counted")
    responses = ["right", "wrong", "right", "right", "wrong"]
    got = run(ens, reference_rewards(ens, ["q"] * 5, responses, ["wrong ref"] * 5))
    assert [r.score for r in got] == [1.0, 0.5, 1.0, 1.0, 0.5]  # "wrong" vs "wrong ref": both lack "right" → B both times → tie
    assert len(srv.seen_by("counted")) == 2 * 2  # two distinct (prompt, response, reference) rows, both orders
