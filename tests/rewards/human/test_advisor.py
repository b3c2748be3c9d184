import pytest

from rewards.human.advisor import AdviceError, advise, estimates, resolve

CODE = {"verifiable": "yes", "budget_usd": 5000}
SUBJECTIVE_RICH = {"verifiable": "no", "budget_usd": 500_000, "timeline_days": 90, "quality_critical": True}
SUBJECTIVE_POOR = {"verifiable": "no", "budget_usd": 2000, "languages": 8, "quality_critical": False}


def test_textbook_scenarios():
    assert advise(CODE)["method"] == "RLVR"
    assert advise(SUBJECTIVE_RICH)["method"] == "RLHF"
    assert advise(SUBJECTIVE_POOR)["method"] == "RLAIF"
    assert advise({**SUBJECTIVE_POOR, "verifiable": "partly"})["method"] == "hybrid (RLVR + RLAIF)"


def test_estimates_by_hand():
    v = {k: i.value for k, i in resolve({"verifiable": "no", "languages": 2}, {"judge_tokens_per_pair": 500.0}).items()}
    e = estimates(v)
    # training: 100 GPU-h × $2.5 = $250, 100/8/24 = .5208 days
    # humans: 20000 pairs × 2 languages × 3 labels × $0.5 = $60,000; 60000/2 per language / (10·60·8) = 12.5 days
    # judges: 40000 pairs × 500 tokens / 1000 × $0.002 = $40
    assert e["RLHF"]["cost_usd"] == pytest.approx(60_250) and e["RLHF"]["days"] == pytest.approx(12.5 + 100 / 192)
    assert e["RLAIF"]["cost_usd"] == pytest.approx(290)
    assert e["RLVR"]["cost_usd"] == pytest.approx(250)


def test_measured_agreement_changes_the_advice():
    # not quality-critical, humans affordable: judges at 75 % (default) → RLAIF; measured at 55 % → RLHF
    base = {"verifiable": "no", "budget_usd": 100_000, "timeline_days": 60}
    assert advise(base)["method"] == "RLAIF"
    r = advise(base, {"judge_human_agreement": 0.55})
    assert r["method"] == "RLHF" and r["inputs"]["judge_human_agreement"].source == "measured"
    assert r["inputs"]["price_human_label_usd"].source == "default"


def test_quality_critical_without_budget_is_hybrid():
    r = advise({"verifiable": "no", "budget_usd": 20_000, "quality_critical": True})
    # humans $30,250 > $20,000; judges $298 + calibration 1000 × 3 × $0.5 = $1,500 fits
    assert r["method"] == "hybrid"


@pytest.mark.parametrize("answers, key", [({}, "verifiable"), ({"verifiable": "maybe"}, "verifiable"),
                                          ({"verifiable": "no", "budget_usd": -1}, "budget_usd"),
                                          ({"verifiable": "no", "colour": 1}, "colour"),
                                          ({"verifiable": "no", "quality_critical": "yes"}, "quality_critical")])
def test_bad_answers_name_the_key(answers, key):
    with pytest.raises(AdviceError) as e:
        advise(answers)
    assert e.value.key == key and str(e.value).startswith(key + ":")
