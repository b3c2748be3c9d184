"""make-pairs (the session's two real vLLM generators) → labels through the app's HTTP API → export → rm train."""
import json

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from cluster.cli import main
from cluster.label_app import create_app
from cluster.label_cmd import make_pairs, read_pairs, write_pairs
from cluster.sample_cmd import read_prompts
from rewards.human.store import LabelStore

pytestmark = pytest.mark.e2e


def distance(text: str, answer: str) -> float:
    """How far a response is from the right sum (not a number: infinitely far)."""
    try:
        return abs(int(text.strip()) - int(answer))
    except ValueError:
        return float("inf")


def judge_like_a_person(pair: dict, answer: str) -> str:
    """The side closer to the right sum, tie when equally far (position-blind, so annotators agree)."""
    left, right = distance(pair["left"], answer), distance(pair["right"], answer)
    return "left" if left < right else "right" if right < left else "tie"


def test_pairs_labels_export_rm_train(generators, assets, tmp_path, capsys):
    prompts = read_prompts(str(assets / "data" / "eval.jsonl"))[:48]
    rows = [json.loads(line) for line in (assets / "data" / "eval.jsonl").read_text().splitlines()]
    answers = {r["prompt"]: r["answer"] for r in rows}
    pairs, missing = make_pairs(generators, prompts, n=4, temperature=1.0, max_tokens=4, batch=16)
    assert len(pairs) + len(missing) == 48 and len(pairs) >= 24
    assert all(p["response_a"] != p["response_b"] for p in pairs)
    assert [p["id"] for p in pairs] == [str(i) for i, _ in prompts if i not in missing]  # input order kept
    write_pairs(pairs, tmp_path / "pairs.parquet")

    db = tmp_path / "labels.sqlite"
    LabelStore(db, k=2).add_pairs(read_pairs(str(tmp_path / "pairs.parquet")))
    tokens = []
    for name in ("ann", "bob"):
        assert main(["label", "add-annotator", name, "--db", str(db)]) == 0
        tokens.append(capsys.readouterr().out.strip())
    client = TestClient(create_app(str(db)))
    for token in tokens:
        h = {"Authorization": f"Bearer {token}"}
        while (pair := client.get("/api/next", headers=h).json()["pair"]) is not None:
            choice = judge_like_a_person(pair, answers[pair["prompt"]])
            assert client.post("/api/label", headers=h, json={"pair_id": pair["id"], "choice": choice}).status_code == 200
    labels = LabelStore(db).labels()
    assert len(labels) == 2 * len(pairs)
    decisive = {r["pair_id"] for r in labels if r["choice"] in ("A", "B")}
    assert len(decisive) >= 16, "too few pairs with a response closer to the right sum"

    prefs = tmp_path / "prefs.parquet"
    assert main(["label", "export", str(db), "-o", str(prefs), "--policy", "drop"]) == 0
    table = pq.read_table(prefs).to_pylist()
    assert len(table) == len(decisive)  # both annotators agree on every decisive pair
    assert all(distance(r["chosen"], answers[r["prompt"]]) < distance(r["rejected"], answers[r["prompt"]])
               and r["agreement"] == 1.0 and r["n_votes"] == 2 for r in table)

    cfg = tmp_path / "rm.yaml"
    cfg.write_text(f"backbone: {{model_dir: {assets / 'model'}}}\ndata: {{train_path: {prefs}, eval_fraction: 0.25}}\n"
                   f"train: {{steps: 5, batch_size: 8, eval_every: 5, max_length: 32, threads: 1}}\n"
                   f"output: {{output_dir: {tmp_path / 'runs'}, run_name: human-rm, progress: false}}\n")
    assert main(["rm", "train", str(cfg)]) == 0
    assert "reward model: held-out pairwise accuracy" in capsys.readouterr().out
    assert (tmp_path / "runs" / "human-rm" / "model" / "config.json").is_file()
