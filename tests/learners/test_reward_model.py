"""`threefold rm train` on a tiny untrained model: noisy labels in, an accurate reward model out,
saved in a form transformers loads, with a report."""
import json
import random

import pytest
import torch

from cluster.cli import main
from learners.preference_data import PreferencePair
from learners.reward_model import RMTrainSettings, pairwise_accuracy, train_reward_model
from rewards.rm.model import TextEncoder


def pairs(n: int, flip: float, seed: int) -> list[dict]:
    """Chosen ends in 0, rejected ends in another digit; `flip` of the labels are swapped."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randrange(50), rng.randrange(50)
        good, bad = str(rng.randrange(1, 20) * 10), str(rng.randrange(1, 200) * 10 + rng.choice([1, 2, 3, 4, 6, 7, 8, 9]))
        if rng.random() < flip:
            good, bad = bad, good
        out.append({"prompt": f"{a}+{b}=", "chosen": good, "rejected": bad})
    return out


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("rm")
    for name, rows in (("train", pairs(2000, 0.1, 0)), ("eval", pairs(300, 0.0, 1))):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "train.jsonl").write_text((root / "train.jsonl").read_text() + '{"prompt": "1+1=", "chosen": 2}\n')
    cfg = root / "rm.yaml"
    cfg.write_text(f"""
backbone: {{model_dir: {tiny_model_dir}}}
data: {{train_path: {root}/train.jsonl, eval_path: {root}/eval.jsonl, on_bad_row: skip}}
train: {{steps: 150, batch_size: 32, lr: 1.0e-3, eval_every: 50, max_length: 32, center_coef: 0.01}}
output: {{output_dir: {root}/out, run_name: rm, progress: false}}
""")
    assert main(["rm", "train", str(cfg)]) == 0
    return root


def test_accuracy_rises_to_90_percent_despite_flipped_labels(trained):
    history = [json.loads(x) for x in (trained / "out/rm/history.jsonl").read_text().splitlines()]
    evals = [h["held_out_accuracy"] for h in history if "held_out_accuracy" in h]
    assert evals[0] == 0.0  # a zero head scores every text the same: ties count as wrong
    assert evals[-1] >= 0.9, evals
    assert [h["step"] for h in history if "held_out_accuracy" in h] == [0, 50, 100, 150]


def test_report_and_metadata(trained):
    out = trained / "out/rm"
    meta = json.loads((out / "model/threefold_rm.json").read_text())
    assert meta["skipped_rows"] == 1 and meta["train_pairs"] == 2000 and meta["held_out_pairs"] == 300
    assert (out / "report.png").stat().st_size > 10_000
    assert f"{meta['held_out_accuracy']:.1%}" in (out / "report.md").read_text()


def test_saved_model_ranks_held_out_pairs_when_loaded_by_transformers(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = trained / "out/rm/model"
    model, tok = AutoModelForSequenceClassification.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    rows = pairs(100, 0.0, 2)
    enc = TextEncoder(tok)
    with torch.no_grad():
        c = model(*enc.batch([r["prompt"] for r in rows], [r["chosen"] for r in rows])).logits.squeeze(-1)
        r = model(*enc.batch([r["prompt"] for r in rows], [r["rejected"] for r in rows])).logits.squeeze(-1)
    assert (c > r).float().mean().item() >= 0.9


def test_bad_row_without_skip_fails_naming_the_line(trained, tmp_path, capsys):
    cfg = (trained / "rm.yaml").read_text().replace("on_bad_row: skip", "on_bad_row: error")
    (tmp_path / "rm.yaml").write_text(cfg)
    assert main(["rm", "train", str(tmp_path / "rm.yaml")]) == 2
    assert f"{trained}/train.jsonl:2001: field 'chosen' must be a string, got int" in capsys.readouterr().err


def test_unknown_config_key_is_named(trained, tmp_path, capsys):
    (tmp_path / "rm.yaml").write_text((trained / "rm.yaml").read_text().replace("lr: 1.0e-3", "lr: 1.0e-3, lrr: 1"))
    assert main(["rm", "train", str(tmp_path / "rm.yaml")]) == 2
    assert "train.lrr: unknown key; allowed here: steps, batch_size, lr" in capsys.readouterr().err


def test_pairwise_accuracy_counts_ties_as_wrong(tiny_model_dir):
    from rewards.rm.model import load_backbone

    model, tok = load_backbone(tiny_model_dir, seed=0)
    same = [PreferencePair("1+1=", "2", "3")] * 4
    assert pairwise_accuracy(model, TextEncoder(tok), same) == 0.0
    assert RMTrainSettings().center_coef == 0.0 and callable(train_reward_model)


def test_rm_score_cli_scores_rows_and_marks_bad_ones(trained, tmp_path, capsys):
    from rewards.rm.scorer import RMScorer

    rows = ['{"id": 1, "prompt": "3+4=", "response": "70"}', "not json", '{"id": 3, "prompt": "3+4=", "response": 7}',
            '{"id": 4, "prompt": "3+4=", "response": "73"}']
    (tmp_path / "in.jsonl").write_text("\n".join(rows) + "\n")
    model = trained / "out/rm/model"
    assert main(["rm", "score", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--model", str(model),
                 "--normalize"]) == 0
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [o["status"] for o in out] == ["scored", "error", "error", "scored"]
    assert "in.jsonl:2: not valid JSON" in out[1]["error"] and out[0]["id"] == 1 and out[3]["id"] == 4
    want = RMScorer(model).score(["3+4=", "3+4="], ["70", "73"])
    assert [out[0]["reward"], out[3]["reward"]] == pytest.approx([w.score for w in want], abs=1e-5)
    assert out[0]["reward"] > out[3]["reward"]  # the trained model prefers the round answer
    meta = json.loads((model / "threefold_rm.json").read_text())
    assert out[0]["reward_z"] == pytest.approx((out[0]["reward"] - meta["score_mean"]) / meta["score_std"])
    assert "2 scored, 2 errors" in capsys.readouterr().err


@pytest.mark.gpu
def test_training_on_the_gpu_matches_the_cpu(tiny_model_dir, monkeypatch):
    import learners.reward_model as rm

    data = [PreferencePair(r["prompt"], r["chosen"], r["rejected"]) for r in pairs(256, 0.0, 3)]
    settings = RMTrainSettings(steps=3, batch_size=32, lr=1e-3, eval_every=3)
    _, _, gpu = train_reward_model(tiny_model_dir, data, data[:64], settings)
    monkeypatch.setattr(rm, "device", lambda: "cpu")
    _, _, cpu = train_reward_model(tiny_model_dir, data, data[:64], settings)
    assert [h["loss"] for h in gpu[1:]] == pytest.approx([h["loss"] for h in cpu[1:]], abs=1e-3)
