"""Adaptive KL controller, learning-rate schedules, DAPO shaping and filtering."""
import pytest

from learners.kl_control import KLController
from learners.schedule import lr_lambda
from learners.shaping import informative_groups, overlong_penalty


def test_adaptive_kl_controller():
    # β 0.1, target 0.05, horizon 1000, 256 samples: KL 0.075 → e = clip(0.5, ±0.2) = 0.2
    #   → β · (1 + 0.2·256/1000) = 0.1 · 1.0512 = 0.10512; KL 0.04 → e = −0.2 → 0.1 · 0.9488
    up = KLController(0.1, target=0.05, horizon=1000)
    assert up.update(0.075, 256) == pytest.approx(0.10512)
    down = KLController(0.1, target=0.05, horizon=1000)
    assert down.update(0.04, 256) == pytest.approx(0.09488)
    # KL 0.055 → e = 0.1 (inside the clip) → 0.1 · 1.0256
    assert KLController(0.1, target=0.05, horizon=1000).update(0.055, 256) == pytest.approx(0.10256)
    assert KLController(0.1).update(5.0, 256) == 0.1  # no target: fixed


def test_cosine_schedule_with_warmup():
    # warm-up 2, total 10, floor 0.1: k=0 → 1/2, k=1 → 1; then 0.1 + 0.9·½(1 + cos(π·(k−2)/8))
    f = lr_lambda("cosine", 2, 10, 0.1)
    assert [round(f(k), 6) for k in (0, 1, 2, 6, 10, 12)] == [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    assert [lr_lambda("constant", 3, 10)(k) for k in (0, 2, 3, 9)] == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    with pytest.raises(KeyError, match="constant, cosine"):
        lr_lambda("linear", 0, 10)


def test_overlong_penalty():
    # limit 20, buffer 4: up to 16 tokens free, then linear to −1 at 20
    assert [overlong_penalty(n, 20, 4) for n in (10, 16, 18, 20)] == [0.0, 0.0, -0.5, -1.0]
    assert overlong_penalty(20, 20, 0) == 0.0 and overlong_penalty(19, 20, 4, factor=0.5) == pytest.approx(-0.375)


def test_informative_groups():
    assert informative_groups([1, 1, 0, 0, 1, 0, 0.5, 0.5], [0, 0, 1, 1, 2, 2, 3, 3]) == {2}
