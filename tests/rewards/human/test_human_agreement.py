import pytest

from labels_fixture import write_synthetic
from rewards.human.agreement import cohen_kappa, human_agreement, judge_agreement, majority, position_bias, wilson
from rewards.human.store import LabelStore

# By hand (X, Y, Z in labels_fixture.py; categories A, B, tie; 10 pairs each):
# x~y: agree 8/10, p_o .8; margins x A5 B4 t1, y A4 B4 t2: p_e = (20+16+2)/100 = .38; κ = .42/.62 = .677419
# x~z: agree 5/10; z A4 B5 t1: p_e = (20+20+1)/100 = .41; κ = .09/.59 = .152542
# y~z: agree 5/10; p_e = (16+20+2)/100 = .38; κ = .12/.62 = .193548
# pooled agreement 18/30 = 60 %; Light's κ = (.677419 + .152542 + .193548) / 3 = .341170
KAPPA = {("x", "y"): 0.42 / 0.62, ("x", "z"): 0.09 / 0.59, ("y", "z"): 0.12 / 0.62}


@pytest.fixture
def labels(tmp_path):
    s = LabelStore(tmp_path / "l.sqlite", k=3)
    write_synthetic(s)
    return s.labels()


def test_kappa_by_hand(labels):
    r = human_agreement(labels, rounds=200)
    got = {tuple(p["annotators"]): (p["n"], p["agreement"], p["kappa"]) for p in r["pairs"]}
    assert got == {k: (10, pytest.approx(a), pytest.approx(v, abs=1e-9))
                   for (k, v), a in zip(KAPPA.items(), (0.8, 0.5, 0.5))}
    assert r["overall"]["agreement"] == pytest.approx(0.6) and r["overall"]["n"] == 30
    assert r["overall"]["kappa"] == pytest.approx(sum(KAPPA.values()) / 3)
    lo, hi = r["overall"]["kappa_ci"]
    assert lo < 0.3412 < hi


def test_kappa_edge_cases():
    assert cohen_kappa([("A", "A"), ("B", "B")]) == 1.0
    assert cohen_kappa([("A", "B"), ("B", "A")]) == -1.0  # p_o 0, p_e .5
    assert cohen_kappa([("A", "A")]) is None  # p_e = 1: κ undefined
    assert cohen_kappa([]) is None


def test_wilson_by_hand():
    # 8/10: centre (.8 + 1.96²/20) / (1 + 1.96²/10) = .716740; half 1.96·√(.016 + .00960)/1.384146 = .226587
    lo, hi = wilson(8, 10)
    assert (lo, hi) == (pytest.approx(0.490156, abs=1e-5), pytest.approx(0.943327, abs=1e-5))
    assert wilson(0, 0) is None


def test_position_bias(labels):
    # left: x, y saw A on the left, z saw B: left picked x 5 (A) + y 4 (A) + z 5 (B) = 14 of 9+8+9 = 26 A/B labels
    assert position_bias(labels)["left_rate"] == pytest.approx(14 / 26)
    assert position_bias(labels)["n"] == 26


def test_judges_against_human_majority(labels):
    # majorities: p1-p5 A, p6-p8 B, p9 tie (B,t,t), p10 tie (t,t,B)
    ens = "A A A B A B B B tie A".split()  # wrong on p4, p10: 8/10
    j1 = "A A A A A B B B tie B".split()  # wrong on p10: 9/10
    j2 = "abstain B B B B B B B B B".split()  # right on p6-p8 only: 3/9
    judged = [{"id": f"p{i + 1}", "winner": ens[i], "p_a": None,
               "votes": [{"judge": "j1", "winner": j1[i]}, {"judge": "j2", "winner": j2[i]}]} for i in range(10)]
    r = judge_agreement(labels, judged, rounds=100)
    assert r["pairs_with_majority"] == 10
    assert {k: (v["n"], v["agreement"]) for k, v in r["judges"].items()} == {
        "ensemble": (10, pytest.approx(0.8)), "j1": (10, pytest.approx(0.9)), "j2": (9, pytest.approx(3 / 9))}


def test_majority():
    assert majority(["A", "A", "B"]) == "A"
    assert majority(["A", "B"]) is None
    assert majority(["tie", "tie", "B"]) == "tie"
    assert majority([]) is None
