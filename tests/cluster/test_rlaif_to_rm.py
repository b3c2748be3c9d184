"""RLAIF to a reward model, the documented command sequence end to end: the policy's own samples
(`threefold sample --pairs`) → AI preference labels (`threefold judge --pairs`, here a scripted
test-double judge) → `threefold rm train` on the Parquet it wrote."""
import json
import re

import pyarrow.parquet as pq
import pytest

from cluster.cli import main
from rewards.judge.guard import framed
from tests.doubles.openai_double import OpenAIDouble, Reply, by_model
from tests.doubles.judge_helpers import GOOD

SCRIPTS: dict = {}
SHOWN = re.compile(r"<<<\n(.*?)\n>>>", re.DOTALL)


def smaller_wins(seen) -> Reply:
    """A consistent judge: prefers the response that sorts first (whatever its position)."""
    a, b = SHOWN.findall(seen.user)[-2:]
    return Reply(GOOD.format("A" if a < b else "B" if b < a else "tie"))


@pytest.fixture(scope="module")
def srv():
    with OpenAIDouble(by_model(SCRIPTS)) as server:
        yield server


def test_sample_judge_train(srv, tiny_model_dir, tmp_path, capsys):
    SCRIPTS["sorter"] = smaller_wins
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"{i}+{i % 9}="}) + "\n" for i in range(80)))
    assert main(["sample", str(prompts), "-o", str(tmp_path / "pairs.jsonl"), "--model", str(tiny_model_dir),
                 "--pairs", "--n", "4", "--max-new-tokens", "4"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) >= 70 and all(r["response_a"] != r["response_b"] for r in rows)
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(80) if f"p{i}" in {r["id"] for r in rows}]

    (tmp_path / "judges.yaml").write_text(
        f"judges:\n  - {{base_url: '{srv.base_url}', model: sorter}}\nretry: {{backoff_base_s: 0.01}}\n")
    assert main(["judge", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "verdicts.jsonl"),
                 "--judges", str(tmp_path / "judges.yaml"), "--pairs", str(tmp_path / "prefs.parquet")]) == 0
    prefs = pq.read_table(tmp_path / "prefs.parquet").to_pylist()
    # each pair's chosen is the one that sorts first as the judge saw it (framed, markers defused)
    expect = {r["id"]: min(r["response_a"], r["response_b"], key=framed) for r in rows
              if framed(r["response_a"]) != framed(r["response_b"])}
    assert {p["id"]: p["chosen"] for p in prefs} == expect

    (tmp_path / "rm.yaml").write_text(f"""
backbone: {{model_dir: {tiny_model_dir}}}
data: {{train_path: {tmp_path}/prefs.parquet, eval_fraction: 0.2}}
train: {{steps: 20, batch_size: 16, lr: 1.0e-3, eval_every: 10, max_length: 32}}
output: {{output_dir: {tmp_path}/runs, run_name: rm, progress: false}}
""")
    assert main(["rm", "train", str(tmp_path / "rm.yaml")]) == 0
    meta = json.loads((tmp_path / "runs/rm/model/threefold_rm.json").read_text())
    assert meta["train_pairs"] + meta["held_out_pairs"] == len(prefs)
    assert "reward model: held-out pairwise accuracy" in capsys.readouterr().out
