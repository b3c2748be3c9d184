"""`threefold label export|agreement|add-annotator` and `threefold advise` through the CLI."""
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rewards" / "human"))
from labels_fixture import write_synthetic  # noqa: E402

from cluster.cli import main  # noqa: E402
from rewards.human.store import LabelStore  # noqa: E402


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "labels.sqlite"
    write_synthetic(LabelStore(path, k=3))
    return path


def test_agreement_prints_hand_computed_values(db, tmp_path, capsys):
    # κ by hand in tests/rewards/human/test_human_agreement.py: x~y .677, x~z .153, y~z .194, mean .341
    judged = tmp_path / "judged.jsonl"
    ens = "A A A B A B B B tie A".split()  # agrees with the human majority on 8 of 10
    judged.write_text("".join(json.dumps({"id": f"p{i + 1}", "winner": w, "p_a": None, "votes": []}) + "\n"
                              for i, w in enumerate(ens)))
    assert main(["label", "agreement", str(db), "--judged", str(judged)]) == 0
    out = capsys.readouterr().out
    assert "labels: 31 from 3 annotators (1 skips" in out
    assert "x vs y                   n=10    agreement 80.0% [49.0%, 94.3%]  kappa 0.677" in out
    assert "x vs z                   n=10    agreement 50.0%" in out and "kappa 0.153" in out
    assert "y vs z                   n=10    agreement 50.0%" in out and "kappa 0.194" in out
    assert "overall                  n=30    agreement 60.0%" in out and "kappa 0.341" in out
    assert "left chosen in 53.8%" in out and "of 26 A/B labels" in out  # 14 / 26
    assert "ensemble                 n=10    agreement 80.0%" in out


def test_export_writes_rm_pairs_and_bad_input_exits_2(db, tmp_path, capsys):
    out = tmp_path / "prefs.parquet"
    assert main(["label", "export", str(db), "-o", str(out), "--policy", "drop"]) == 0
    assert pq.read_table(out).column("chosen").to_pylist() == ["a1", "a2", "b6", "b7"]
    assert main(["label", "export", str(tmp_path / "none.sqlite"), "-o", str(out)]) == 2
    assert "none.sqlite: label database does not exist" in capsys.readouterr().err
    assert main(["label", "export", str(db), "-o", str(out), "--min-votes", "9"]) == 2


def test_add_annotator_prints_token_once(tmp_path, capsys):
    path = tmp_path / "l.sqlite"
    assert main(["label", "add-annotator", "ann", "--db", str(path)]) == 0
    token = capsys.readouterr().out.strip()
    assert LabelStore(path).annotator(token) == "ann"
    assert main(["label", "add-annotator", "ann", "--db", str(path)]) == 2


def test_agreement_bad_judged_file(db, tmp_path, capsys):
    bad = tmp_path / "judged.jsonl"
    bad.write_text('{"id": "p1", "winner": "A"}\n{"id": "p2"}\n')
    assert main(["label", "agreement", str(db), "--judged", str(bad)]) == 2
    assert f"{bad}:2: a judged row needs keys 'id' and 'winner'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, method", [
    (["--verifiable", "yes", "--budget", "5000"], "RLVR"),
    (["--verifiable", "no", "--budget", "500000", "--timeline", "90", "--quality-critical"], "RLHF"),
    (["--verifiable", "no", "--budget", "2000", "--languages", "8", "--no-quality-critical"], "RLAIF"),
])
def test_advise_textbook_scenarios(argv, method, capsys):
    assert main(["advise", *argv]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"recommendation: {method}\n")
    assert "measured: none" in out and "default: " in out and "price_human_label_usd=0.5" in out


def test_advise_reports_measured_numbers(db, tmp_path, capsys):
    judged, metrics, answers = tmp_path / "j.jsonl", tmp_path / "m.json", tmp_path / "a.yaml"
    ens = "A A A B A B B B tie A".split()
    judged.write_text("".join(json.dumps({"id": f"p{i + 1}", "winner": w}) + "\n" for i, w in enumerate(ens)))
    metrics.write_text(json.dumps({"j1": {"prompt_tokens": 9000, "completion_tokens": 1000, "latency_p50_s": 0.5},
                                   "j2": {"prompt_tokens": 4000, "completion_tokens": 1000, "latency_p50_s": 1.5}}))
    answers.write_text("verifiable: no\nbudget_usd: 2000\nlanguages: 8\n")
    assert main(["advise", "--answers", str(answers), "--labels", str(db), "--judged", str(judged),
                 "--judge-metrics", str(metrics), "--set", "price_gpu_hour_usd=3"]) == 0
    out = capsys.readouterr().out
    # 15000 tokens / 10 pairs = 1500 per pair; slowest p50 1.5 s; ensemble agrees on 8 of 10 majorities
    assert "measured: judge_tokens_per_pair=1500, judge_latency_s=1.5, judge_human_agreement=0.8\n" in out
    assert "answer: verifiable=no, budget_usd=2000, languages=8, price_gpu_hour_usd=3\n" in out
    answers.write_text("verifiable: no\nbudget_usd: lots\n")
    assert main(["advise", "--answers", str(answers)]) == 2
    assert f"{answers}:2: budget_usd: must be a number" in capsys.readouterr().err
