"""The text of `threefold label agreement`: human-human agreement, position bias, judges vs humans."""
from __future__ import annotations

from rewards.human.agreement import human_agreement, judge_agreement, position_bias


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(ci, fmt) -> str:
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _line(name: str, r: dict) -> str:
    return (f"  {name:<24s} n={r['n']:<5d} agreement {_pct(r['agreement'])}{_ci(r['agreement_ci'], _pct)}  "
            f"kappa {_num(r['kappa'])}{_ci(r.get('kappa_ci'), _num)}")


def agreement_report(labels: list[dict], judged: list[dict] | None = None) -> tuple[str, dict]:
    """(printed text, the same numbers as a dict). Intervals are 95 %: Wilson for percentages,
    bootstrap over pairs (1000 resamples, seed 0) for κ."""
    hh, bias = human_agreement(labels), position_bias(labels)
    out = [f"labels: {len(labels)} from {len(hh['annotators'])} annotators "
           f"({sum(r['choice'] == 'skip' for r in labels)} skips, left out below)",
           "human-human agreement (Cohen's kappa per annotator pair; overall kappa = mean over pairs):"]
    out += [_line(" vs ".join(r["annotators"]), r) for r in hh["pairs"]]
    out.append(_line("overall", hh["overall"]))
    out.append(f"human position bias: left chosen in {_pct(bias['left_rate'])}{_ci(bias['ci'], _pct)} "
               f"of {bias['n']} A/B labels (50% = none)")
    numbers = {"human": hh, "position_bias": bias}
    if judged is not None:
        ja = judge_agreement(labels, judged)
        out.append(f"judges vs human majority ({ja['pairs_with_majority']} pairs with a majority):")
        out += [_line(name, r) for name, r in ja["judges"].items()]
        numbers["judges"] = ja
    return "\n".join(out), numbers
