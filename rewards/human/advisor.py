"""The method advisor: RLVR, RLHF, RLAIF or a hybrid, with an estimated cost and time.

Each number is an Input(value, source): "measured" (from this project's runs on the user's data:
judge tokens per pair and latency, verifier throughput, judge-human agreement), "answer" (the
user's answer) or "default" (the table below). The report says which is which.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULTS = {
    # prices
    "price_human_label_usd": 0.50, "price_judge_1k_tokens_usd": 0.002, "price_gpu_hour_usd": 2.50,
    # measurable on the user's data (measured values replace these)
    "judge_tokens_per_pair": 1200.0, "judge_latency_s": 2.0, "verifier_samples_per_s": 50.0,
    "judge_human_agreement": 0.75,
    # scale of the job
    "pairs_needed": 20000, "labels_per_pair": 3, "annotators_per_language": 10, "labels_per_annotator_hour": 60,
    "judge_concurrency": 16, "train_gpu_hours": 100.0, "gpus": 8, "rollout_samples": 1_000_000,
    "calibration_pairs": 1000, "agreement_threshold": 0.7,
}
ANSWERS = {"verifiable": None, "budget_usd": 10000.0, "timeline_days": 30.0, "quality_critical": False,
           "languages": 1, "iteration": "normal"}
VERIFIABLE = ("yes", "no", "partly")
ITERATION = ("fast", "normal", "slow")


class AdviceError(ValueError):
    """An answer or number that cannot be used; names the key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Input:
    value: object
    source: str  # measured | answer | default


def resolve(answers: dict, measured: dict) -> dict[str, Input]:
    """Every input with where it came from; unknown keys and bad values raise AdviceError."""
    unknown = set(answers) - set(DEFAULTS) - set(ANSWERS)
    if unknown:
        key = sorted(unknown)[0]
        raise AdviceError(key, f"unknown key; allowed: {', '.join(sorted({**ANSWERS, **DEFAULTS}))}")
    out = {}
    for key, default in {**ANSWERS, **DEFAULTS}.items():
        if key in measured and key not in answers:
            out[key] = Input(measured[key], "measured")
        elif key in answers:
            out[key] = Input(_check(key, answers[key], default), "answer")
        else:
            out[key] = Input(default, "default")
    if out["verifiable"].value is None:
        raise AdviceError("verifiable", "answer yes, no or partly (can a program check an answer, e.g. tests or a known result?)")
    return out


def _check(key: str, value, default):
    if key == "verifiable":
        value = {True: "yes", False: "no"}.get(value, value)
        if value not in VERIFIABLE:
            raise AdviceError(key, f"must be yes, no or partly, got {value!r}")
        return value
    if key == "iteration" and value not in ITERATION:
        raise AdviceError(key, f"must be fast, normal or slow, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise AdviceError(key, f"must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise AdviceError(key, f"must be a number ≥ 0, got {value!r}")
    return value


def estimates(v: dict) -> dict[str, dict]:
    """{method: {cost_usd, days}} for RLVR, RLHF and RLAIF (each includes the RL training itself)."""
    train_cost = v["train_gpu_hours"] * v["price_gpu_hour_usd"]
    train_days = v["train_gpu_hours"] / max(1, v["gpus"]) / 24
    pairs = v["pairs_needed"] * v["languages"]
    labels = pairs * v["labels_per_pair"]
    # one team per language labels in parallel: time follows one language's labels
    human_days = v["pairs_needed"] * v["labels_per_pair"] / max(1e-9, v["annotators_per_language"] * v["labels_per_annotator_hour"] * 8)
    judge_days = pairs * v["judge_latency_s"] / max(1, v["judge_concurrency"]) / 86400
    verify_hours = v["rollout_samples"] / max(1e-9, v["verifier_samples_per_s"]) / 3600
    return {
        "RLVR": {"cost_usd": train_cost, "days": train_days + verify_hours / 24},
        "RLHF": {"cost_usd": labels * v["price_human_label_usd"] + train_cost, "days": human_days + train_days},
        "RLAIF": {"cost_usd": pairs * v["judge_tokens_per_pair"] / 1000 * v["price_judge_1k_tokens_usd"] + train_cost,
                  "days": judge_days + train_days},
    }


def _fits(est: dict, v: dict) -> bool:
    return est["cost_usd"] <= v["budget_usd"] and est["days"] <= v["timeline_days"]


def subjective_choice(v: dict, est: dict) -> tuple[str, list[str]]:
    """RLHF, RLAIF or hybrid for a task no program can check, and why."""
    judges_good = v["judge_human_agreement"] >= v["agreement_threshold"]
    human_fits, judge_fits = _fits(est["RLHF"], v), _fits(est["RLAIF"], v)
    agree = f"judge–human agreement {v['judge_human_agreement']:.0%} vs threshold {v['agreement_threshold']:.0%}"
    human = f"human labels ${est['RLHF']['cost_usd']:,.0f} / {est['RLHF']['days']:.1f} days vs budget ${v['budget_usd']:,.0f} / {v['timeline_days']:g} days"
    calibration = v["calibration_pairs"] * v["languages"] * v["labels_per_pair"] * v["price_human_label_usd"]
    if v["quality_critical"] and human_fits:
        return "RLHF", ["quality-critical and " + human + ": people label every pair"]
    if v["quality_critical"] and est["RLAIF"]["cost_usd"] + calibration <= v["budget_usd"]:
        return "hybrid", ["quality-critical but " + human, f"judges label the bulk; a human set of {v['calibration_pairs']} pairs per language (${calibration:,.0f}) checks them"]
    if judges_good and judge_fits:
        why = [agree, human if not human_fits else "judges are cheaper and faster to re-run"]
        if v["iteration"] == "fast":
            why.append("fast iteration: judges re-label new policy outputs in hours, people in days")
        return "RLAIF", why
    if human_fits:
        return "RLHF", [agree + ": judges are not good enough on this data", human]
    return "RLAIF", [human, "nothing else fits; measure judge–human agreement before relying on it"]


def advise(answers: dict, measured: dict | None = None) -> dict:
    """The recommendation with its reasons, the estimates and every input with its source."""
    inputs = resolve(answers, measured or {})
    v = {k: i.value for k, i in inputs.items()}
    est = estimates(v)
    if v["verifiable"] == "yes":
        method, why = "RLVR", ["a program checks answers: verifiable rewards need no labels and cannot be flattered"]
    else:
        method, why = subjective_choice(v, est)
        if v["verifiable"] == "partly":
            why = [f"verifiable parts use RLVR, the rest {method}"] + why
            method = f"hybrid (RLVR + {method})"
    return {"method": method, "why": why, "estimates": est, "inputs": inputs}


def format_advice(result: dict) -> str:
    lines = [f"recommendation: {result['method']}"] + [f"  - {w}" for w in result["why"]]
    lines.append("estimates (RL training included):")
    for name, e in result["estimates"].items():
        lines.append(f"  {name:6s} ${e['cost_usd']:>12,.0f}  {e['days']:7.1f} days")
    for source in ("measured", "answer", "default"):
        keys = [k for k, i in result["inputs"].items() if i.source == source]
        lines.append(f"{source}: " + (", ".join(f"{k}={_fmt(result['inputs'][k].value)}" for k in keys) or "none"))
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
